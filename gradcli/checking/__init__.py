"""``gradcli check``: backends compared with a reference.

- ``full``: one quantity from every backend, entry by entry; the verdict rules.
- ``probe``: the scalar ``vᵀ J u`` per probe from each backend, and the Taylor test.
- ``model``: check over several arguments (``--wrt 'param:*'``), full or probe mode,
  then localisation (``locate``: the wrong module, tensor and entries).
- ``baseline``: gradient fingerprints (``--save-baseline``/``--baseline``).
- ``suite``: ``--suite FILE.toml``, many checks in one process.

Imports from :mod:`gradcli.compute` and below; never from render or cli.
"""
