"""What is to be computed, validated once: FUNCTION resolved (``function``), the
arrays bound to it (``problem``: Problem, build_problem, --rows), ``--wrt`` lists
and globs (``wrt``), and the plan (``plan``: layout, result shape, memory budget,
streaming). After a Problem is built, backends may trust it.

Imports from :mod:`gradcli.core`, :mod:`gradcli.io`, :mod:`gradcli.catalogue` and
:mod:`gradcli.usercode`.
"""
