"""Output files are written whole or not at all (SPEC §2): an overwritten file
keeps its mode, whatever it was; a new file gets what open() gives under the
umask; a write that fails midway leaves the old file as it was and no
temporary file behind."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app

runner = CliRunner()
JACOBIAN = ["jacobian", "exp", "-x", "[1.0, 2.0]"]


def mode(path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".json"])
@pytest.mark.parametrize("old_mode", [0o640, 0o755, 0o604])
def test_an_overwritten_output_keeps_its_mode(tmp_path, suffix, old_mode):
    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"old")
    path.chmod(old_mode)
    result = runner.invoke(app, [*JACOBIAN, "-o", str(path)])
    assert result.exit_code == 0, result.stderr
    assert mode(path) == old_mode
    assert path.read_bytes() != b"old"


def test_a_saved_baseline_and_a_check_report_keep_their_modes(tmp_path):
    report, base = tmp_path / "report.json", tmp_path / "base.json"
    for path, old_mode in ((report, 0o640), (base, 0o754)):
        path.write_text("{}")
        path.chmod(old_mode)
    result = runner.invoke(app, ["check", "exp", "-x", "[1.0]", "--backends", "analytic,fd", "-o", str(report),
                                 "--save-baseline", str(base)])
    assert result.exit_code == 0, result.stderr
    assert (mode(report), mode(base)) == (0o640, 0o754)
    assert json.loads(report.read_text())["ok"] is True


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_a_new_output_gets_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "new.npy"
        result = runner.invoke(app, [*JACOBIAN, "-o", str(path)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    assert mode(path) == 0o666 & ~umask


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure):
    """The device fills up (or Ctrl-C comes) after part of the array is written: the command
    fails, the file it would have replaced is untouched, and nothing else is left in the folder."""
    path = tmp_path / "out.npy"
    np.save(path, np.arange(3.0))
    before = path.read_bytes()

    def partial_save(handle, array, **kwargs):
        handle.write(b"\x93NUMPY partial")
        raise failure

    monkeypatch.setattr(np, "save", partial_save)
    result = runner.invoke(app, [*JACOBIAN, "-o", str(path)])
    assert result.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]
    assert path.read_bytes() == before
