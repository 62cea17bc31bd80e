"""Bytes in and out: ARRAY specs read into arrays, bounded by ``--max-memory``
before anything is read (``arrays``), trained weights read as a state dict from
a header-bounded file (``checkpoints``), and output files written whole or not at
all (``files``). Imports only from :mod:`gradcli.core`.
"""
