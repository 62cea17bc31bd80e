"""``PATH.pt2`` named as FUNCTION: load a ``torch.export`` program without
ever unpickling anything.

``torch.export.load`` has several ways to run a pickle (torch 2.x,
``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde/serialize.py``):

- a weight or tensor constant marked ``"use_pickle": true`` in
  ``data/weights/*_weights_config.json`` / ``data/constants/*_constants_config.json``
  is read with ``torch.load(weights_only=False)``;
- constants named ``custom_obj_*`` go through ``torch._C._pickle_load_obj`` and
  ``opaque_obj_*`` through ``pickle.loads``;
- legacy ``data/weights/NAME.pt`` / ``data/constants/NAME.pt`` files, the sample
  inputs ``data/sample_inputs/NAME.pt`` and the pre-2.7 zip format go through
  ``deserialize_torch_artifact``, which retries with ``weights_only=False``
  when the safe load fails;
- ``data/aotinductor/`` holds compiled shared libraries, loaded and run.

So the archive is read into memory once and inspected entry by entry against
a list of what a plain exported program holds (:func:`inspect_pt2`); anything
else is refused. The load itself then runs from those same bytes under
:func:`no_unpickling`, which makes every pickle path above raise instead
(defence in depth: a path the inspection missed still cannot unpickle).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
import zipfile
from pathlib import Path
from unittest import mock

from ..core.errors import UsageError

# Entries of a plain exported program, relative to the archive's root folder.
_PLAIN = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/.*|extra/.*|models/[^/]+\.json"
    r"|data/weights/weight_\d+|data/weights/[^/]+_weights_config\.json"
    r"|data/constants/tensor_\d+|data/constants/[^/]+_constants_config\.json"
    r"|data/sample_inputs/[^/]+\.pt)$"
)


def refuse(path: Path, why: str) -> UsageError:
    return UsageError(f"FUNCTION: {path} {why}; gradcli never unpickles a .pt2 (re-export it with "
                      "torch.export.save from tensors only)")


def inspect_pt2(data: bytes, path: Path) -> None:
    """Raise :class:`UsageError` unless every entry of the archive ``data`` is
    one that loads without a pickle: raw tensor bytes, JSON configs whose
    entries all say ``"use_pickle": false``, and sample inputs that
    ``torch.load(weights_only=True)`` accepts."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError) as err:
        raise UsageError(f"FUNCTION: {path} is not a torch.export archive (not a zip file); save it with "
                         "torch.export.save") from err
    refuse_zip_bomb(archive, len(data), path)
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise refuse(path, "is not in the torch.export.save layout (one root folder)")
    root = roots.pop() + "/"
    for name in names:
        inner = name[len(root):]
        if inner.endswith("/"):
            continue
        if not _PLAIN.match(inner):
            raise refuse(path, f"holds {inner!r}, which torch would unpickle or execute")
        if inner.endswith("_config.json"):
            _check_config(archive.read(name), inner, path)
        elif inner.startswith("data/sample_inputs/"):
            _check_weights_only(archive.read(name), inner, path)


def refuse_zip_bomb(archive: zipfile.ZipFile, size: int, path: Path) -> None:
    """torch.export.save and torch.jit.save store the tensors uncompressed (a little code may be
    deflated): entries that unpack to far more than the ``size``-byte archive (a zip bomb: 1.5 MB
    of deflated spaces held 1.5 GB) are refused before any is read."""
    unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > 2 * size + 2**20:
        raise UsageError(f"FUNCTION: {path} unpacks to {unpacked} bytes from {size} (compressed entries, which "
                         "torch.export.save and torch.jit.save do not write); save the model again")


def _check_config(text: bytes, inner: str, path: Path) -> None:
    try:
        entries = json.loads(text)["config"]
        items = list(entries.items())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise refuse(path, f"has an unreadable {inner}") from err
    for name, meta in items:
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise refuse(path, f"marks {name!r} in {inner} as pickled")
        prefix = "weight_" if "/weights/" in inner else "tensor_"
        if not str(meta.get("path_name", "")).startswith(prefix):
            raise refuse(path, f"stores {name!r} in {inner} as {meta.get('path_name')!r}, not raw tensor bytes")


def _check_weights_only(data: bytes, inner: str, path: Path) -> None:
    """torch retries a failed safe load of this entry with weights_only=False:
    make sure the safe load succeeds, so that the retry never happens."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about what it refuses; the refusal says it
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # the restricted unpickler raises many types
        raise refuse(path, f"holds {inner}, which does not load with weights_only=True") from err


def _refused(*_args, **_kwargs):
    raise UsageError("a pickle inside the .pt2 archive was about to be loaded; refused")


@contextlib.contextmanager
def no_unpickling():
    """Inside: ``torch.load`` only with ``weights_only=True``; ``pickle.loads``
    of the pt2 loader and ``torch._C._pickle_load_obj`` raise; torch's export
    loggers (every logger, for the duration of the load) are silent (a failing load logs a multi-line traceback)."""
    import torch
    import torch.export.pt2_archive._package as package

    safe_load = torch.load

    def weights_only_load(*args, **kwargs):
        if kwargs.get("weights_only") is False:
            _refused()
        return safe_load(*args, **{**kwargs, "weights_only": True})

    level = logging.root.manager.disable
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch, "load", weights_only_load))
        stack.enter_context(mock.patch.object(package, "pickle", mock.Mock(loads=_refused, load=_refused)))
        stack.enter_context(mock.patch.object(torch._C, "_pickle_load_obj", _refused))
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(level)
