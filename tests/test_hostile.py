"""The second round of hostile input (issue 13): files that would run code,
inputs that would exhaust memory, user code that exits or prints, output paths
that are links or too long. Where the process itself matters (memory limits,
exit codes of ``sys.exit`` in user code, closed or full standard output) the
test runs gradcli in a subprocess; memory limits are set with
``resource.setrlimit(RLIMIT_AS)`` in that child only."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def gradcli(*args, limit_mib: int | None = None, stdin=None, stdout=subprocess.PIPE, cwd=None, **kw):
    """Run ``python -m gradcli ARGS`` in a child process, its address space
    capped at ``limit_mib`` MiB when given (so a runaway allocation fails there,
    not on the machine)."""
    prefix = []
    if limit_mib is not None:
        prefix = ["-c", "import resource, runpy, sys; "
                        f"resource.setrlimit(resource.RLIMIT_AS, ({limit_mib} << 20, {limit_mib} << 20)); "
                        "sys.argv = ['gradcli', *sys.argv[1:]]; runpy.run_module('gradcli', run_name='__main__')"]
    else:
        prefix = ["-m", "gradcli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, *prefix, *map(str, args)], stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, timeout=300, **kw)


def assert_usage_error(result, *words):
    """Exit 2, nothing on stdout, one or two lines on stderr naming ``words``, no traceback."""
    stderr = result.stderr
    assert result.exit_code == 2 if hasattr(result, "exit_code") else result.returncode == 2, stderr
    assert result.stdout == "", result.stdout
    assert "Traceback" not in stderr and 1 <= len(stderr.strip().splitlines()) <= 2, stderr
    for word in words:
        assert word in stderr, (word, stderr)


# --- security: a .pt2 is never unpickled -----------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _exported_program_bytes() -> bytes:
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x)

    buffer = io.BytesIO()
    torch.export.save(torch.export.export(Net(), (torch.randn(4, 3),)), buffer)
    return buffer.getvalue()


def _rewrite(data: bytes, path: Path, edit) -> Path:
    """Copy the archive ``data`` to ``path``, passing each entry through ``edit(name, bytes) -> bytes | None``
    (None drops it); ``edit(None, None)`` may return ``{name: bytes}`` of entries to add."""
    source = zipfile.ZipFile(io.BytesIO(data))
    root = source.namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            new = edit(info.filename[len(root) + 1:], source.read(info.filename))
            if new is not None:
                out.writestr(info.filename, new)
        for name, new in (edit(None, None) or {}).items():
            out.writestr(f"{root}/{name}", new)
    return path


def _mark_pickled(name, data, marker):
    if name is None:
        return None
    if name.endswith("_weights_config.json"):
        config = json.loads(data)
        config["config"]["lin.weight"]["use_pickle"] = True
        return json.dumps(config).encode()
    return pickle.dumps(_Payload(marker)) if name == "data/weights/weight_0" else data


@pytest.fixture(scope="module")
def pt2_bytes():
    return _exported_program_bytes()


def _hostile_pt2_cases(marker: Path):
    payload = pickle.dumps(_Payload(marker))
    return {
        "use_pickle weight": lambda n, d: _mark_pickled(n, d, marker),
        "sample inputs that need weights_only=False": lambda n, d: (
            None if n is None else payload if n.startswith("data/sample_inputs/") else d),
        "opaque object constant": lambda n, d: {"data/constants/opaque_obj_0": payload} if n is None else d,
        "legacy weights file": lambda n, d: {"data/weights/model.pt": payload} if n is None else d,
        "compiled library": lambda n, d: {"data/aotinductor/model/model.so": b"\x7fELF"} if n is None else d,
    }


@pytest.mark.parametrize("case", list(_hostile_pt2_cases(Path("x"))))
def test_a_pt2_that_would_unpickle_is_refused_and_runs_nothing(case, pt2_bytes, tmp_path):
    marker = tmp_path / "MARKER"
    path = _rewrite(pt2_bytes, tmp_path / "evil.pt2", _hostile_pt2_cases(marker)[case])
    result = gradcli("jacobian", path, "-x", "randn:4,3")
    assert not marker.exists(), "the payload ran"
    assert_usage_error(result, "evil.pt2", "never unpickles")
    assert "Logging error" not in result.stderr


def test_the_guard_stops_a_pickle_the_inspection_would_miss(pt2_bytes, tmp_path):
    """Defence in depth: torch.export.load itself, on the hostile bytes, under no_unpickling."""
    import torch

    from gradcli.functions.pt2_guard import no_unpickling

    marker = tmp_path / "MARKER"
    data = _rewrite(pt2_bytes, tmp_path / "evil.pt2", lambda n, d: _mark_pickled(n, d, marker)).read_bytes()
    with pytest.raises(Exception), no_unpickling():
        torch.export.load(io.BytesIO(data))
    assert not marker.exists()


def test_a_plain_pt2_still_loads(pt2_bytes, tmp_path):
    path = tmp_path / "net.pt2"
    path.write_bytes(pt2_bytes)
    result = gradcli("jacobian", path, "-x", "randn:4,3", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["shape"] == [4, 2, 4, 3]
