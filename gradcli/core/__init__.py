"""The bottom layer: what every other package shares and nothing in it depends on.

- ``rowform/``: the row algebra (RowLayout, kernels, scatter/gather between per-row
  blocks and full Jacobians, second derivatives in row form); imports nothing else
  from gradcli.
- ``errors``: the GradcliError family, each with its exit code.
- ``options``: every mode as an enum, and the settings a backend reads.
- ``results``: frozen results with their provenance; ``compare``: tolerances and
  mismatch reports; ``rows``: ``--rows``; ``sizes``: bytes as people write them;
  ``parallel``: NumPy chunks on every core.

Imports nothing from gradcli outside ``core`` (and ``gradcli._version``).
"""
