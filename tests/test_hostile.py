"""The second round of hostile input (issue 13): files that would run code,
inputs that would exhaust memory, user code that exits or prints, output paths
that are links or too long. Where the process itself matters (memory limits,
exit codes of ``sys.exit`` in user code, closed or full standard output) the
test runs gradcli in a subprocess; memory limits are set with
``resource.setrlimit(RLIMIT_AS)`` in that child only."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import signal
import stat
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
                          stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, timeout=kw.pop("timeout", 300), **kw)


@contextlib.contextmanager
def full_standard_output(tmp_path, device="/dev/full"):
    """A standard output whose every write fails: ``/dev/full`` where it is the character
    device it should be ("no space left"); elsewhere (a machine where something replaced it by
    a regular file) a file already ``ROOM`` bytes long, appended to under ``RLIMIT_FSIZE`` =
    ``ROOM`` ("file too large"), which leaves the command room for its own output files.
    Yields the keywords for :func:`gradcli`."""
    if os.path.exists(device) and stat.S_ISCHR(os.stat(device).st_mode):
        with open(device, "w") as full:
            yield {"stdout": full}
        return
    room = 4 << 20
    stdout = tmp_path.parent / f"{tmp_path.name}-stdout"
    stdout.write_bytes(b"\n" * room)

    def no_room_after_it():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))

    with open(stdout, "a") as full:
        yield {"stdout": full, "preexec_fn": no_room_after_it}

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
    result = runner.invoke(app, ["jacobian", str(path), "-x", "randn:4,3"])
    assert not marker.exists(), "the payload ran"
    assert_usage_error(result, "evil.pt2", "never unpickles")


def test_a_refused_pt2_prints_one_line_and_no_logging_traceback(pt2_bytes, tmp_path):
    marker = tmp_path / "MARKER"
    path = _rewrite(pt2_bytes, tmp_path / "evil.pt2", lambda n, d: _mark_pickled(n, d, marker))
    result = gradcli("jacobian", path, "-x", "randn:4,3")
    assert not marker.exists()
    assert_usage_error(result, "evil.pt2")
    assert "Logging error" not in result.stderr


def test_the_guard_stops_a_pickle_the_inspection_would_miss(pt2_bytes, tmp_path):
    """Defence in depth: torch.export.load itself, on the hostile bytes, under no_unpickling."""
    import torch

    from gradcli.usercode.pt2_guard import no_unpickling

    marker = tmp_path / "MARKER"
    data = _rewrite(pt2_bytes, tmp_path / "evil.pt2", lambda n, d: _mark_pickled(n, d, marker)).read_bytes()
    with pytest.raises(Exception), no_unpickling():
        torch.export.load(io.BytesIO(data))
    assert not marker.exists()


def test_a_plain_pt2_still_loads(pt2_bytes, tmp_path):
    path = tmp_path / "net.pt2"
    path.write_bytes(pt2_bytes)
    result = runner.invoke(app, ["jacobian", str(path), "-x", "randn:4,3", "--layout", "full", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["shape"] == [4, 2, 4, 3]


def test_a_pt_tensor_file_is_loaded_weights_only(tmp_path):
    """-x file.pt goes through the restricted unpickler: a payload is refused, not run."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path)]), "weights_only=True")
    assert not marker.exists()


# --- memory: bounded before the work -------------------------------------------------


def _npy_header_only(path: Path, shape, descr="<f8") -> Path:
    """An .npy file whose header declares ``shape`` but holds no data."""
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
    return path


def test_an_npz_member_is_sized_from_its_header_before_it_is_read(tmp_path):
    """A member whose header declares 1.2 GB (its data left out: only the header
    may be read): refused at --max-memory 64MiB in a child that could not hold
    the array anyway (before the fix: the array was allocated, MemoryError, exit 3)."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("x.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (150_000_000,)})
    result = gradcli("jacobian", "exp", "-x", path, "--max-memory", "64MiB", limit_mib=700)
    assert_usage_error(result, "--input", "bomb.npz:x", "--max-memory")


def test_an_npy_header_declaring_terabytes_is_refused(tmp_path):
    path = _npy_header_only(tmp_path / "huge.npy", (10**12,))
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path)]), "--input", "huge.npy", "--max-memory")


def test_a_json_file_is_bounded_by_its_size(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([0.5] * 100_000))  # 700 kB of text, up to 14 MB parsed
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path), "--max-memory", "4MiB"]),
                       "--input", "big.json", "--max-memory")
    assert runner.invoke(app, ["jacobian", "exp", "-x", str(path), "--max-memory", "64MiB", "--json"]).exit_code == 0


def test_standard_input_is_read_only_up_to_the_limit():
    data = json.dumps([0.5] * 100_000)
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", "-", "--max-memory", "64KiB"], input=data),
                       "--input", "standard input", "--max-memory")


def test_rows_named_twice_are_refused_before_any_copy():
    rows = ",".join(["0"] * 20_000)
    assert_usage_error(runner.invoke(app, ["jacobian", "softmax", "-x", "randn:3,4", "--rows", rows,
                                           "--max-memory", "10MiB"]), "--rows", "more than once")


def test_nonfinite_entries_are_counted_a_chunk_at_a_time():
    import tracemalloc

    from gradcli.core.results import count_nonfinite

    value = np.zeros(5_000_000)
    value[[0, 1_048_575, 1_048_576, 4_999_999]] = [np.nan, np.inf, -np.inf, np.nan]
    tracemalloc.start()
    try:
        count = count_nonfinite(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 4
    assert peak < value.nbytes / 16, f"a temporary of {peak} bytes for a {value.nbytes}-byte array"


# --- input errors are exit 2, naming the option --------------------------------------


def _pt_file(path: Path, make) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated
        torch.save(make(torch), path)
    return path


PT_TENSORS = {
    "sparse": lambda torch: torch.eye(3).to_sparse(),
    "meta": lambda torch: torch.empty(3, device="meta"),
    "float8_e4m3fn": lambda torch: torch.ones(3).to(torch.float8_e4m3fn),
    "quantized": lambda torch: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8),
}


@pytest.mark.parametrize("kind", list(PT_TENSORS))
def test_a_pt_tensor_numpy_cannot_hold_is_an_input_error(kind, tmp_path):
    path = _pt_file(tmp_path / "t.pt", PT_TENSORS[kind])
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path)]), "--input", kind)


def _npz_with_text_member(path: Path) -> str:
    np.savez(path, a=np.zeros(3))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    return f"{path}:notes.txt"


BAD_INPUTS = {
    "npz member that is not .npy": (lambda tmp: ["jacobian", "exp", "-x", _npz_with_text_member(tmp / "a.npz")],
                                    ["--input", "not a .npy"]),
    "JSON integer of 5000 digits": (lambda tmp: ["jacobian", "exp", "-x", "[" + "9" * 5000 + "]"],
                                    ["--input", "too large"]),
    "64 dimensions (JSON)": (lambda tmp: ["jacobian", "exp", "-x", "[" * 64 + "1.0" + "]" * 64],
                             ["--input", "64 dimensions"]),
    "64 dimensions (.npy)": (lambda tmp: ["jacobian", "exp", "-x", _save(tmp / "d.npy", np.zeros((1,) * 64))],
                             ["--input", "64 dimensions"]),
    "randint above int64": (lambda tmp: ["jacobian", "exp", "-x", "randint:99999999999999999999:3"],
                            ["--input", "randint"]),
    "negative seed": (lambda tmp: ["jacobian", "exp", "-x", "randn:3", "--seed=-1"], ["--seed"]),
    "--beta nan": (lambda tmp: ["grad", "smooth_l1_loss", "-x", "randn:3", "-t", "randn:3", "--beta", "nan"],
                   ["--beta", "finite"]),
    "--beta inf --json": (lambda tmp: ["grad", "smooth_l1_loss", "-x", "randn:3", "-t", "randn:3", "--beta", "inf",
                                       "--json"], ["--beta", "finite"]),
    "--delta inf --json": (lambda tmp: ["grad", "huber_loss", "-x", "randn:3", "-t", "randn:3", "--delta", "inf",
                                        "--json"], ["--delta", "finite"]),
    "check --atol nan": (lambda tmp: ["check", "exp", "-x", "randn:3", "--atol", "nan"], ["--atol"]),
    "check --atol inf": (lambda tmp: ["check", "exp", "-x", "randn:3", "--atol", "inf"], ["--atol"]),
    "check --rtol nan": (lambda tmp: ["check", "exp", "-x", "randn:3", "--rtol", "nan"], ["--rtol"]),
    "uint64 target above int64": (
        lambda tmp: ["grad", "cross_entropy", "-x", "randn:2,3", "-t",
                     _save(tmp / "t.npy", np.array([2**64 - 100, 1], dtype=np.uint64))], ["--target", "int64"]),
}


def _save(path: Path, array: np.ndarray) -> str:
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_an_input_error_is_exit_2_naming_the_option(case, tmp_path):
    make_args, words = BAD_INPUTS[case]
    assert_usage_error(runner.invoke(app, make_args(tmp_path)), *words)


def test_an_npz_with_thousands_of_members_lists_a_few(tmp_path):
    path = tmp_path / "many.npz"
    np.savez(path, **{f"k{i}": np.zeros(1) for i in range(3000)})
    result = runner.invoke(app, ["jacobian", "exp", "-x", str(path)])
    assert_usage_error(result, "3000", "k0", "many.npz:KEY")
    assert len(result.stderr) < 400


def test_stdin_closed_is_an_input_error():
    command = f"{sys.executable} -m gradcli jacobian exp -x - <&-"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_usage_error(result, "--input", "standard input is closed")


# --- JSON: streamed, strict, --no-value, the vjp/jvp vector ------------------------------


@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (70_000,), (3, 40_000), (2, 1, 70_000)])
def test_streamed_json_is_the_text_json_dumps_would_write(shape):
    from gradcli.render.json import array_to_json, dump

    rng = np.random.default_rng(0)
    array = rng.standard_normal(shape)
    if array.size > 2:
        array.reshape(-1)[[1, -1]] = [np.nan, np.inf]
    doc = {"a": 1, "value": array, "notes": ["x"], "later": lambda: 2.5}
    pieces = []
    dump(doc, pieces.append)
    expected = json.dumps({"a": 1, "value": array_to_json(array), "notes": ["x"], "later": 2.5},
                          separators=(", ", ": "), allow_nan=False) + "\n"
    assert "".join(pieces) == expected
    assert max(len(p) for p in pieces) < 40 * 70_000  # never the whole array as one text


def test_no_value_leaves_the_value_out_and_keeps_the_rest():
    doc = json.loads(runner.invoke(app, ["jacobian", "softmax", "-x", "randn:2,3", "--json", "--no-value"]).stdout)
    assert "value" not in doc and doc["shape"] == [2, 3, 3] and doc["output"]


@pytest.mark.parametrize("command, option, shape", [("jvp", "tangent", [2, 3]), ("vjp", "cotangent", [2, 3])])
def test_the_random_vector_is_saved_so_the_result_can_be_reproduced(command, option, shape, tmp_path):
    args = [command, "softmax", "-x", "randn:2,3", f"--{option}", "randn", "--seed", "7"]
    doc = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    vector = np.array(doc[option])
    assert vector.shape == tuple(shape) and np.unique(vector).size == vector.size  # random, not ones
    runner.invoke(app, [*args, "-o", str(tmp_path / "r.npz")])
    with np.load(tmp_path / "r.npz") as saved:
        np.testing.assert_array_equal(saved[option], vector)
        np.testing.assert_allclose(saved["value"], doc["value"])


def test_json_memory_does_not_grow_with_the_value():
    """Writing the --json document of a 16 MB value holds at most a few MB
    (Python lists of the whole value took ~12x its size)."""
    import tracemalloc

    from gradcli.compute.solve import jacobian
    from gradcli.render.json import dump, result_to_dict

    result = jacobian("softmax", input=np.random.default_rng(0).standard_normal((1, 1400)), layout="full")
    result.structure  # the structure notes are computed (and cached) first: this measures the writing
    written = [0]

    def write(text):
        written[0] += len(text)

    tracemalloc.start()
    try:
        dump(result_to_dict(result), write)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert written[0] > 2 * result.value.nbytes  # the whole value was written
    assert peak < result.value.nbytes / 4, f"{peak} bytes held for a {result.value.nbytes}-byte value"


# --- tables never cut a number ----------------------------------------------------------


def _table_text(args, width):
    from rich.console import Console

    import gradcli.cli.output as cli

    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False, soft_wrap=False)
    original = cli.make_console
    cli.make_console = lambda: console
    try:
        result = runner.invoke(app, args)
        assert result.exit_code == 0
    finally:
        cli.make_console = original
    return out.getvalue() + result.stdout  # the header through the console, the rendered body as text


@pytest.mark.parametrize("width", [60, 80, 120])
def test_a_table_never_cuts_a_number(width):
    text = _table_text(["jacobian", "softmax", "-x", "randn:2,10", "--no-timing"], width)
    cells = [cell for line in text.splitlines() for cell in line.split()]
    cut = [cell for cell in cells if cell.endswith("…") and cell != "…"]
    assert not cut, cut[:5]
    if width < 120:
        assert "columns hidden to fit" in text and "-o FILE.npy" in text
    numbers = [float(c) for c in cells if c.lstrip("-").replace(".", "", 1).isdigit() and "." in c]
    assert numbers


def test_the_header_time_covers_the_whole_run():
    text = _table_text(["jacobian", "softmax", "-x", "randn:2,10"], 200)
    first = text.splitlines()[0]
    assert "load" in first and "render" in first and "compute" in first, first


# --- user code: its exits are errors, its prints are not output ---------------------------

USER_CODE = '''
from __future__ import annotations
import sys
from dataclasses import dataclass


@dataclass
class Scale:
    factor: float = 2.0


class Boom(BaseException):
    pass


def exit0(x):
    sys.exit(0)


def exit5(x):
    raise SystemExit(5)


def base(x):
    raise Boom("custom")


def generator_exit(x):
    raise GeneratorExit()


def noisy(x):
    print("hello from user code")
    return x * Scale().factor
'''


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "user.py"
    path.write_text(USER_CODE)
    return path


@pytest.mark.parametrize("name, shown", [("exit0", "SystemExit: 0"), ("exit5", "SystemExit: 5"),
                                         ("base", "Boom: custom"), ("generator_exit", "GeneratorExit")])
def test_user_code_that_exits_is_exit_3_your_code_raised(name, shown, user_file):
    for command in ("jacobian", "check"):  # check must never pass by exiting 0
        result = runner.invoke(app, [command, f"{user_file}:{name}", "-x", "randn:3"])
        assert result.exit_code == 3, (command, result.exit_code, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert f"your code raised {shown}" in result.stderr


def test_sys_exit_in_user_code_under_check_is_exit_3_in_the_process(user_file):
    result = gradcli("check", f"{user_file}:exit0", "-x", "randn:3")
    assert result.returncode == 3 and "your code raised SystemExit: 0" in result.stderr and result.stdout == ""


def test_sys_exit_at_import_is_exit_3(tmp_path):
    path = tmp_path / "quits.py"
    path.write_text("import sys\nsys.exit(0)\ndef f(x):\n    return x\n")
    result = runner.invoke(app, ["grad", f"{path}:f", "-x", "randn:3"])
    assert result.exit_code == 3 and "your code raised SystemExit: 0" in result.stderr and result.stdout == ""


def test_print_in_user_code_goes_to_stderr_and_dataclasses_load(user_file):
    result = runner.invoke(app, ["jacobian", f"{user_file}:noisy", "-x", "[1.0, 2.0]", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["value"] == [[2.0, 0.0], [0.0, 2.0]]  # 2 x: the @dataclass default ran
    assert "hello from user code" in result.stderr


# --- numbers that overflow, options that do not apply -------------------------------------


def test_float32_overflow_names_the_finite_value_and_nothing_warns():
    result = runner.invoke(app, ["jacobian", "exp", "-x", "[1e39, 1]", "--dtype", "float32"])
    assert_usage_error(result, "--input", "1e+39", "float32")


def test_overflow_in_the_function_is_counted_not_warned():
    result = gradcli("jacobian", "exp", "-x", "[1000.0, 1.0]", "--json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    doc = json.loads(result.stdout)
    # the value's inf and the output's: every null the document writes is counted (issue 24)
    assert doc["nonfinite"] == 2 and doc["value"][0] is None and doc["output"][0] is None


def test_a_subnormal_fd_step_is_refused():
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", "[1.0]", "-b", "fd", "--fd-step", "1e-320"]),
                       "--fd-step")


def test_device_cuda_with_a_numpy_backend_says_it_ran_on_the_cpu():
    doc = json.loads(runner.invoke(app, ["jacobian", "exp", "-x", "[1.0]", "--device", "cuda", "--json"]).stdout)
    assert any("--device cuda" in note and "CPU" in note for note in doc["notes"])


# --- -o: modes, links, names, order -------------------------------------------------------


def test_overwriting_keeps_the_file_mode(tmp_path):
    path = tmp_path / "o.npy"
    path.write_bytes(b"old")
    path.chmod(0o600)
    assert runner.invoke(app, ["jacobian", "exp", "-x", "[1.0]", "-o", str(path)]).exit_code == 0
    assert path.stat().st_mode & 0o777 == 0o600 and np.load(path).shape == (1,)


def test_output_through_a_symlink_writes_its_target(tmp_path):
    target = tmp_path / "real.npy"
    target.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(target)
    assert runner.invoke(app, ["jacobian", "exp", "-x", "[1.0, 2.0]", "-o", str(link)]).exit_code == 0
    assert link.is_symlink() and np.load(target).shape == (2,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npy", "real.npy"]


def test_a_250_character_name_works_and_256_is_refused(tmp_path):
    name = "a" * 246 + ".npy"
    assert runner.invoke(app, ["jacobian", "exp", "-x", "[1.0]", "-o", str(tmp_path / name)]).exit_code == 0
    assert (tmp_path / name).exists()
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", "[1.0]", "-o", str(tmp_path / ("b" * 252 + ".npy"))]),
                       "--output", "256 bytes")


def test_an_unwritable_folder_is_exit_2():
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", "[1.0]", "-o", "/proc/x.npy"]), "--output", "/proc")


@pytest.mark.parametrize("device", ["/dev/full", "no such device: a file under RLIMIT_FSIZE"])
def test_standard_output_is_written_before_the_file_is_published(tmp_path, device):
    """stdout on a full device: the command fails and leaves no -o file (nor a temporary one)."""
    with full_standard_output(tmp_path, device) as full:
        result = gradcli("jacobian", "exp", "-x", "randn:300", "--json", "-o", tmp_path / "o.npy", **full)
    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_refusals_suggest_only_what_applies():
    import gradcli
    from gradcli.core.errors import UsageError

    with pytest.raises(UsageError) as refused:
        gradcli.vjp("softmax", input=np.zeros((100, 100)), max_memory=10_000)
    assert refused.value.param == "max_memory" and "gradcli vjp" not in str(refused.value)
    from gradcli.core.options import Layout
    from gradcli.compute.structure import describe

    note = describe(np.ones((2, 3, 3)), Layout.BLOCKS, None, np.float64, per_sample=True)[0]
    assert "gradcli jacobian --layout blocks --verify-blocks" in note


def test_structure_notes_need_no_temporary_the_size_of_the_value():
    import tracemalloc

    from gradcli.compute.solve import jacobian
    from gradcli.core.options import Layout
    from gradcli.problem.problem import build_problem
    from gradcli.compute.structure import describe

    x = np.random.default_rng(0).standard_normal((4, 400))
    result = jacobian("softmax", input=x, layout="full")
    rows = build_problem("softmax", {"input": x}).rows
    tracemalloc.start()
    try:  # the verifying path, every entry between rows read (as solve does for a Jacobian up to 2^20 entries)
        notes = describe(result.value, Layout.FULL, rows, np.float64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert any(note.startswith("block-diagonal across batch rows (verified") for note in notes)
    assert any("symmetric" in note for note in notes)
    assert peak < result.value.nbytes / 2, f"{peak} bytes for a {result.value.nbytes}-byte value"


# --- the process: signals during start-up, standard output closed ---------------------------

STARTUP_SIGNAL = ("import os, runpy, signal, sys, threading; "
                  "sys.argv = ['gradcli', 'jacobian', 'exp', '-x', '[1.0]']; "
                  "threading.Timer(0.02, os.kill, (os.getpid(), signal.{name})).start(); "
                  "runpy.run_module('gradcli', run_name='__main__')")


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_while_gradcli_starts_is_a_clean_interrupt(name):
    """The signal arrives 20 ms into `python -m gradcli`, while the CLI is still being imported."""
    result = subprocess.run([sys.executable, "-c", STARTUP_SIGNAL.format(name=name)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 130, (result.returncode, result.stderr[-300:])
    assert result.stderr == "gradcli: interrupted\n" and result.stdout == ""


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_standard_output_closed_is_a_short_error_and_leaves_no_file(extra, tmp_path):
    command = (f"{sys.executable} -m gradcli jacobian exp -x '[1.0, 2.0]' {' '.join(extra)} "
               f"-o {tmp_path / 'o.npy'} >&-")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode not in (0, 1) and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "standard output" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["functions"], ["--help"], ["jacobian", "softmax", "-x", "randn:3,4"],
                                  ["check", "exp", "-x", "[1.0, 2.0]", "--json"]])
def test_a_reader_gone_before_the_output_is_a_silent_exit_141(args):
    """`gradcli ... | head` where head has gone: no message, exit 141 (128 + SIGPIPE, what
    the shell reports for `yes | head`), neither 2 with an error nor 1 (check's mismatch)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before gradcli writes anything
    try:
        result = gradcli(*args, stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_reader_gone_only_cut_the_display_so_the_output_file_is_published(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = gradcli("jacobian", "softmax", "-x", "randn:3,4", "--json", "-o", tmp_path / "J.npy", stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")
    assert [p.name for p in tmp_path.iterdir()] == ["J.npy"]
    expected = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:3,4", "--json"])
    np.testing.assert_array_equal(np.load(tmp_path / "J.npy"), np.array(json.loads(expected.stdout)["value"]))


@pytest.mark.parametrize("device", ["/dev/full", "no such device: a file under RLIMIT_FSIZE"])
def test_check_writes_its_report_file_only_after_standard_output(tmp_path, device):
    with full_standard_output(tmp_path, device) as full:
        result = gradcli("check", "exp", "-x", "[1.0, 2.0]", "--reference", "analytic", "--backends", "fd",
                         "-o", tmp_path / "report.json", **full)
    assert result.returncode == 2 and "standard output" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_table_of_every_entry_is_counted_in_the_memory_plan():
    result = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:100,100", "--no-summarize", "--max-memory", "64MiB"])
    assert_usage_error(result, "--no-summarize", "--max-memory")
    assert runner.invoke(app, ["jacobian", "softmax", "-x", "randn:100,100", "--json", "--max-memory", "64MiB"]).exit_code == 0


SMALL_MODEL = '''
import torch
from torch import nn

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5)).double()
'''


@pytest.mark.parametrize("limit", ["12KiB", "16KiB"])
def test_a_tiny_max_memory_stops_autograd_blocks_naming_sizes_that_add_up(tmp_path, limit):
    """Per-sample blocks of a small model under a limit below one backward pass: exit 2 with the
    --max-memory message, nothing on stdout, no output file, and the sizes in units that show them
    (they read 'needs about 0.0 MiB ... over the 0.0 MiB left')."""
    (tmp_path / "small.py").write_text(SMALL_MODEL)
    out = tmp_path / "J.npy"
    proc = gradcli("jacobian", f"{tmp_path}/small.py:net", "-x", "randn:40,6", "--layout", "blocks",
                   "-b", "autograd", "--max-memory", limit, "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and not out.exists()
    assert proc.stderr.startswith("gradcli: error: --max-memory:") and len(proc.stderr.strip().splitlines()) <= 2
    assert "0.0 MiB" not in proc.stderr and "KiB (activations measured:" in proc.stderr, proc.stderr


def test_a_tiny_max_memory_stops_fd_on_user_code_naming_what_holds_it(tmp_path):
    """fd's stack of perturbed points alone exceeds the limit: the message says so (it read
    'needs 1 KiB ... over the 0 B left' without what took the rest)."""
    (tmp_path / "small.py").write_text(SMALL_MODEL)
    proc = gradcli("jacobian", f"{tmp_path}/small.py:net", "-x", "randn:40,6", "--layout", "blocks",
                   "-b", "fd", "--max-memory", "64KiB")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("gradcli: error: --max-memory:") and "of perturbed points are held" in proc.stderr


# --- round 3: baselines, outputs that are inputs ------------------------------------------

CHECK_EXP = ["check", "exp", "--backends", "fd", "--reference", "analytic", "--no-timing"]


@pytest.fixture()
def saved_baseline(tmp_path):
    path = tmp_path / "base.json"
    assert runner.invoke(app, [*CHECK_EXP, "-x", "[1.0, 2.0]", "--save-baseline", str(path)]).exit_code == 0
    return path


DAMAGED_BASELINES = {
    "no probes": lambda d: d["arguments"]["input"].update(probes=[]),
    "a probe that is text": lambda d: d["arguments"]["input"].update(probes=["a"] * 4),
    "a probe that is null": lambda d: d["arguments"]["input"].update(probes=[None] * 4),
    "a scale that is text": lambda d: d["arguments"]["input"].update(scale="x"),
    "no shape": lambda d: d["arguments"]["input"].pop("shape"),
    "arguments as a list": lambda d: d.update(arguments=[]),
    "output as text": lambda d: d.update(output="x"),
    "versions as text": lambda d: d.update(versions="x"),
}


@pytest.mark.parametrize("case", list(DAMAGED_BASELINES))
def test_a_damaged_baseline_is_exit_2_not_an_internal_error_nor_a_pass(case, saved_baseline):
    """A truncated or hand-edited baseline was an internal error (exit 3), or, with no probes
    left, compared nothing and passed."""
    document = json.loads(saved_baseline.read_text())
    DAMAGED_BASELINES[case](document)
    saved_baseline.write_text(json.dumps(document))
    result = runner.invoke(app, [*CHECK_EXP, "-x", "[1.0, 2.0]", "--baseline", str(saved_baseline)])
    assert_usage_error(result, "--baseline", "base.json", "--save-baseline")


def test_a_baseline_nested_too_deeply_is_exit_2(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_usage_error(runner.invoke(app, [*CHECK_EXP, "-x", "[1.0]", "--baseline", str(path)]), "--baseline")


@pytest.mark.parametrize("scale", [1e300, float("inf"), float("nan")])
def test_a_baseline_scale_edited_up_cannot_hide_a_moved_gradient(scale, saved_baseline):
    """The tolerance came from the larger of the saved and the new scale: a saved scale of
    1e300, inf or nan made every change pass."""
    document = json.loads(saved_baseline.read_text())
    document["arguments"]["input"]["scale"] = scale
    saved_baseline.write_text(json.dumps(document))
    result = runner.invoke(app, [*CHECK_EXP, "-x", "[1.0, 2.5]", "--baseline", str(saved_baseline), "--json"])
    assert result.exit_code == 1, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)["baseline"]["entries"]}
    assert entries["input"]["moved"] and entries["output"]["moved"]


def test_an_unchanged_gradient_still_matches_its_baseline(saved_baseline):
    result = runner.invoke(app, [*CHECK_EXP, "-x", "[1.0, 2.0]", "--baseline", str(saved_baseline), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["baseline"]["ok"] is True


def test_an_output_file_that_is_an_input_is_refused_and_the_input_kept(tmp_path, saved_baseline):
    data = tmp_path / "x.npy"
    np.save(data, np.ones((2, 3)))
    (tmp_path / "link.npy").symlink_to(data)
    for args, named in [(["jacobian", "softmax", "-x", str(data), "-o", str(tmp_path / "link.npy")], "--input"),
                        (["vjp", "softmax", "-x", "randn:2,3", "--cotangent", f"{data}", "-o", str(data)],
                         "--cotangent"),
                        ([*CHECK_EXP, "-x", "[1.0, 2.0]", "--baseline", str(saved_baseline), "-o",
                          str(saved_baseline)], "--baseline")]:
        assert_usage_error(runner.invoke(app, args), "--output", f"is also {named}")
    assert np.load(data).shape == (2, 3)
    assert json.loads(saved_baseline.read_text())["schema"] == "gradcli-baseline/1"


def _npy_v3_header_only(path: Path, shape) -> Path:
    """A version 3.0 .npy header (UTF-8; np.save writes it for UTF-8 field names) declaring ``shape``."""
    text = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    padding = (64 - (8 + 4 + len(text) + 1) % 64) % 64
    text += b" " * padding + b"\n"
    path.write_bytes(b"\x93NUMPY\x03\x00" + len(text).to_bytes(4, "little") + text)
    return path


def test_an_npy_version_3_header_is_sized_before_it_is_read(tmp_path):
    """Version 3.0 headers were not read before np.load: 8 TB declared was an internal
    error (MemoryError), and a smaller lie went past --max-memory."""
    path = _npy_v3_header_only(tmp_path / "v3.npy", (10**12,))
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path)]), "--input", "v3.npy", "--max-memory")
    small = tmp_path / "ok.npy"
    small.write_bytes(_npy_v3_header_only(tmp_path / "h.npy", (3,)).read_bytes() + np.arange(3.0).tobytes())
    doc = json.loads(runner.invoke(app, ["jacobian", "exp", "-x", str(small), "--json"]).stdout)
    np.testing.assert_allclose(doc["value"], np.exp(np.arange(3.0)))


def test_a_pt_tensor_is_sized_by_its_elements_not_its_file(tmp_path):
    """torch.save of one number expanded to 3*10^7 (stride 0) is a 1.5 KB file: it passed the
    file-size bound, then became a 240 MB float64 array under --max-memory 16MiB."""
    import torch

    path = tmp_path / "t.pt"
    torch.save(torch.zeros(1, dtype=torch.float32).expand(3 * 10**7), path)
    assert path.stat().st_size < 4096
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path), "--max-memory", "16MiB"]),
                       "--input", "t.pt", "[30000000]", "--max-memory")
    torch.save(torch.arange(6.0).reshape(2, 3).t(), path)  # a transposed view arrives as the array it shows
    doc = json.loads(runner.invoke(app, ["jacobian", "exp", "-x", str(path), "--json"]).stdout)
    np.testing.assert_allclose(doc["value"], np.exp(np.arange(6.0).reshape(2, 3).T))


class _Endless:
    """A standard input that never ends (``yes |``, ``< /dev/zero``) after ``head``, counting what is read."""

    def __init__(self, head: bytes = b"", fill: bytes = b"y\n") -> None:
        self.head, self.fill, self.read_bytes = head, fill, 0

    def read(self, n: int = -1) -> bytes:
        assert n >= 0, "an endless stream read to its end"
        data = (self.head + self.fill * (n // len(self.fill) + 1))[:n]
        self.head = self.head[n:]
        self.read_bytes += len(data)
        return data


def test_an_endless_standard_input_is_read_only_as_far_as_it_could_be_parsed():
    """JSON on stdin was read up to --max-memory itself (2 GiB of `yes` by default) and only then
    refused, though parsing takes ~20 bytes a byte; .npy bytes are read to the size their header declares."""
    from gradcli.io.arrays import load_array
    from gradcli.core.errors import UsageError

    stream = _Endless()
    with pytest.raises(UsageError, match="--max-memory"):
        load_array("-", "--input", stdin=stream, max_bytes=2**20)
    assert stream.read_bytes <= 2**20 // 20 + 16
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1000,)})
    stream = _Endless(header.getvalue() + np.arange(1000.0).tobytes(), fill=b"\0")
    np.testing.assert_array_equal(load_array("-", "--input", stdin=stream, max_bytes=2**20), np.arange(1000.0))
    assert stream.read_bytes == len(header.getvalue()) + 8000
    with pytest.raises(UsageError, match="not a valid .npy"):  # the magic string alone
        load_array("-", "--input", stdin=io.BytesIO(b"\x93NUMPY"), max_bytes=2**20)


NOISY_CODE = '''
import ctypes, os, subprocess, sys, threading, time
os.write(1, b"descriptor 1 at import\\n")
os.chdir("/")
threading.Thread(target=time.sleep, args=(3600,)).start()  # never joined


def f(x):
    os.write(1, b"descriptor 1 in a call\\n")
    ctypes.CDLL(None).printf(b"C printf in a call\\n")
    subprocess.run(["echo", "a child process"])
    os.chdir("/tmp")
    return x * 2

'''


def test_user_code_writing_to_descriptor_1_or_changing_folder_leaves_the_output_alone(tmp_path):
    """Only print() was redirected: os.write(1, ...), C's printf and child processes wrote into
    --json's standard output; an os.chdir in the code moved a relative -o file elsewhere; and a
    thread it started and never ended kept the process alive after its result (Python waits for
    non-daemon threads at exit: a CI job hung until killed)."""
    (tmp_path / "noisy.py").write_text(NOISY_CODE)
    result = gradcli("jacobian", "noisy.py:f", "-x", "[1.0, 3.0]", "--json", "-o", "J.npy", cwd=tmp_path,
                     timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["value"] == [[2.0, 0.0], [0.0, 2.0]]
    for noise in ("descriptor 1 at import", "descriptor 1 in a call", "C printf in a call", "a child process"):
        assert noise in result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "J.npy"), 2 * np.eye(2))


def test_user_code_returning_a_meta_tensor_is_your_code_not_an_internal_error(tmp_path):
    (tmp_path / "meta.py").write_text("def meta(x):\n    return x.to('meta')\n")
    result = runner.invoke(app, ["jacobian", f"{tmp_path}/meta.py:meta", "-x", "[1.0]"])
    assert result.exit_code == 3 and "meta device" in result.stderr and "internal error" not in result.stderr


def test_probes_beyond_the_memory_limit_are_refused_before_they_are_drawn():
    """--probes 10^11 drew a (10^11, n) array of signs: an internal MemoryError (exit 3)."""
    result = runner.invoke(app, [*CHECK_EXP, "-x", "randn:3", "--mode", "probe", "--probes", "99999999999"])
    assert_usage_error(result, "--probes", "--max-memory")
    assert runner.invoke(app, [*CHECK_EXP, "-x", "randn:3", "--mode", "probe", "--probes", "7"]).exit_code == 0


def test_junit_xml_stays_well_formed_whatever_names_and_errors_hold(tmp_path):
    """A control character in a check's name (a TOML escape) or in the message your code raised
    made the JUnit file unreadable XML, which a CI dashboard rejects whole."""
    import xml.etree.ElementTree as ET

    (tmp_path / "raises.py").write_text('def f(x):\n    raise ValueError("bad \\x00\\x1b[31m byte")\n')
    (tmp_path / "s.toml").write_text('[[check]]\nname = "a\\u0001b <&>"\nfunction = "exp"\ninput = "[1.0]"\n'
                                     'backends = ["fd"]\nreference = "analytic"\n'
                                     '[[check]]\nfunction = "raises.py:f"\ninput = "[1.0]"\n')
    result = runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), "--junit", str(tmp_path / "j.xml")])
    assert result.exit_code == 3, result.stderr
    cases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    names = [case.get("name") for case in cases]
    assert names == ["a#x01b <&>", "raises.py:f"]
    error = ET.parse(tmp_path / "j.xml").getroot().find(".//error")
    assert "bad #x00#x1B[31m byte" in error.get("message")


def test_suite_entries_write_their_output_and_may_not_share_a_file(tmp_path):
    """An entry's `output` (and `check --plot`) was accepted and silently did nothing; two entries
    saving to the same file replaced each other's."""
    entry = '[[check]]\nfunction = "exp"\ninput = "[1.0]"\nbackends = ["fd"]\nreference = "analytic"\n'
    (tmp_path / "s.toml").write_text(entry + 'output = "r.json"\n')
    assert runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), "--no-timing"]).exit_code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["command"] == "check" and report["ok"] is True
    (tmp_path / "d.toml").write_text(entry + 'save-baseline = "b.json"\n' + entry.replace("exp", "tanh")
                                     + 'save-baseline = "./b.json"\n')
    assert_usage_error(runner.invoke(app, ["check", "--suite", str(tmp_path / "d.toml")]), "b.json",
                       "check 'exp' save-baseline", "is also check 'tanh' save-baseline")
    assert not (tmp_path / "b.json").exists()
    assert_usage_error(runner.invoke(app, [*CHECK_EXP, "-x", "[1.0]", "--plot", str(tmp_path / "p.png")]), "--plot")


def test_suite_arrays_and_arg_lists_written_in_toml(tmp_path):
    """`input = [1.0, 2.0]` reached the parser as '1.0,2.0' (not JSON) and `arg = [...]` as one
    --arg of comma-joined items, its paths not resolved from the suite's folder."""
    (tmp_path / "m.py").write_text("def f(x, *, mask):\n    return (x * mask).sum()\n")
    np.save(tmp_path / "mask.npy", np.array([1.0, 0.0, 2.0]))
    (tmp_path / "s.toml").write_text('[[check]]\nfunction = "m.py:f"\ninput = [1.0, 2.0, 3.0]\n'
                                     'arg = ["mask=mask.npy"]\noutput = "r.json"\n')
    result = runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), "--no-timing"], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["shape"] == [3]
    result = runner.invoke(app, ["check", f"{tmp_path}/m.py:f", "-x", "[1.0]", "--arg", "x=[1.0]"])
    assert_usage_error(result, "--arg x", "-x/--input")


def test_json_numbers_beyond_their_dtype_and_a_byte_order_mark(tmp_path):
    """{"dtype": "float32"} with 1e300 printed NumPy's RuntimeWarning (three lines on stderr) and then
    'non-finite value inf', a value the file does not hold; a UTF-8 byte-order mark was refused."""
    path = tmp_path / "x.json"
    path.write_text('{"data": [1.0, 1e300], "dtype": "float32"}')
    result = gradcli("jacobian", "exp", "-x", path)
    assert_usage_error(result, "--input", "x.json", "float32")
    assert "inf" not in result.stderr
    path.write_bytes(b"\xef\xbb\xbf[1.0, 2.0]")
    doc = json.loads(runner.invoke(app, ["jacobian", "exp", "-x", str(path), "--json"]).stdout)
    np.testing.assert_allclose(doc["value"], np.exp([1.0, 2.0]))
    path.write_text('{"data": [Infinity], "dtype": "float32"}')  # infinite already: --allow-nonfinite's business
    assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(path)]), "non-finite", "--allow-nonfinite")


def test_the_arrays_of_one_run_fit_the_memory_limit_together():
    """Each array was bounded by --max-memory alone: -x and -t of 7.6 MiB each passed a 12 MiB limit."""
    args = ["jacobian", "mse_loss", "-x", "randn:1000,1000", "--reduction", "none"]
    result = runner.invoke(app, [*args, "-t", "randn:1000,1000", "--max-memory", "12MiB"])
    assert_usage_error(result, "--target", "7.6 MiB", "leave of --max-memory 12.0 MiB")
    assert runner.invoke(app, [*args, "-t", "randn:1000,1000", "--max-memory", "20MiB", "--no-value", "--json"]
                         ).exit_code == 0


def test_paths_that_are_not_files_say_what_they_are(tmp_path):
    """A folder, a pipe and a link loop were all 'file not found'; `--arg m=-` after `-x -` was
    not counted as a second reader of standard input (it found it empty)."""
    (tmp_path / "dir.npy").mkdir()
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "loop.npy").symlink_to(tmp_path / "loop.npy")
    for name, words in [("dir.npy", "is a folder"), ("fifo.npy", "not a regular file"), ("loop.npy", "symbolic link")]:
        assert_usage_error(runner.invoke(app, ["jacobian", "exp", "-x", str(tmp_path / name)]), "--input", words)
    (tmp_path / "f.py").write_text("def f(x, *, m):\n    return x * m\n")
    result = runner.invoke(app, ["jacobian", f"{tmp_path}/f.py:f", "-x", "-", "--arg", "m=-"], input="[1.0]")
    assert_usage_error(result, "--arg m", "--input does")


@pytest.mark.parametrize("option", [["--max-memory", "1KiB"], ["--atol", "10"], ["--dtype", "float32"],
                                    ["-x", "randn:3"], ["--seed", "7"]])
def test_a_per_check_option_beside_suite_is_refused_not_ignored(option, tmp_path):
    """`check --suite s.toml --atol 10` ran every entry with its own tolerance and exit 0: the
    option applied to nothing, silently."""
    (tmp_path / "s.toml").write_text('[[check]]\nfunction = "exp"\ninput = "[1.0]"\nbackends = ["fd"]\n'
                                     'reference = "analytic"\n')
    result = runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), *option])
    assert_usage_error(result, option[0] if option[0] != "-x" else "--input", "each [[check]] takes its own")
    ok = runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), "--json", "--no-timing",
                             "--junit", str(tmp_path / "j.xml")])
    assert ok.exit_code == 0 and (tmp_path / "j.xml").exists()


def test_suite_entries_keep_their_own_options_whatever_their_names(tmp_path):
    """An unnamed second `exp` was called 'exp #2', the name another entry had chosen; entries are
    looked up by name, so the tanh entry ran exp's options and the report listed 'exp #2' twice."""
    (tmp_path / "s.toml").write_text('[[check]]\nfunction = "exp"\ninput = "[1.0]"\n'
                                     '[[check]]\nname = "exp #2"\nfunction = "tanh"\ninput = "[1.0]"\n'
                                     '[[check]]\nfunction = "exp"\ninput = "[5.0]"\n')
    result = runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), "--json", "--no-timing"])
    ran = [(d["name"], d["function"]) for d in json.loads(result.stdout)]
    assert ran == [("exp", "exp"), ("exp #2", "tanh"), ("exp #3", "exp")]


def test_backends_named_twice_run_once_and_the_hint_names_another():
    doc = json.loads(runner.invoke(app, [*CHECK_EXP, "-x", "[1.0]", "--backends", "fd,fd", "--json"]).stdout)
    assert [b["name"] for b in doc["backends"]] == ["fd"]
    result = runner.invoke(app, ["check", "exp", "-x", "[1.0]", "--reference", "fd", "--backends", "fd"])
    assert_usage_error(result, "--backends fd,autograd")


def test_torch_modes_your_file_sets_at_import_do_not_leak_into_gradcli(tmp_path):
    """`torch.set_grad_enabled(False)` at the top of a file made every autograd gradient 0, silently."""
    import torch

    (tmp_path / "nograd.py").write_text("import torch\ntorch.set_grad_enabled(False)\n"
                                        "torch.set_default_dtype(torch.float16)\n"
                                        "def f(x):\n    return (x ** 2).sum()\n")
    try:
        doc = json.loads(runner.invoke(app, ["grad", f"{tmp_path}/nograd.py:f", "-x", "[1.0, 2.0]", "-b", "autograd",
                                             "--json"]).stdout)
        assert doc["value"] == [2.0, 4.0]
        assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
    finally:
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("name", ["m.py", "m.py:", "m.py:f:g", "m.py:1f"])
def test_your_code_named_without_a_valid_name_says_path_py_name(name, tmp_path, monkeypatch):
    """`gradcli grad model.py` said "unknown function 'model.py'", as for a misspelt built-in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("import os\ndef f(x):\n    return x\n")
    assert_usage_error(runner.invoke(app, ["grad", name, "-x", "[1.0]"]), "PATH.py:NAME", "m.py:loss")
    assert_usage_error(runner.invoke(app, ["grad", "m.py:os", "-x", "[1.0]"]), "Python module")


def test_the_library_takes_torch_tensors_and_size_strings():
    """A tensor that requires grad (what a pytest test holds) raised torch's RuntimeError
    "Can't call numpy() on Tensor that requires grad"; max_memory="1KiB" a TypeError."""
    import torch

    import gradcli
    from gradcli.core.errors import UsageError

    x = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    result = gradcli.vjp("softmax", input=x, cotangent=torch.ones(1, 3, requires_grad=True))
    expected = torch.autograd.grad(torch.softmax(x, -1), x, torch.ones(1, 3, dtype=torch.float64))[0]
    np.testing.assert_allclose(result.value, expected.numpy(), atol=np.finfo(np.float64).eps ** 0.6)
    with pytest.raises(UsageError, match="max_memory"):
        gradcli.jacobian("softmax", input=np.ones((40, 40)), max_memory="1KiB")


def test_a_plot_never_holds_an_image_the_size_of_a_large_value():
    """--plot drew every entry: matplotlib's image of a 2500 x 2500 Jacobian took ~10x the value
    (800 MB for a 72 MB value under --max-memory 100MiB); it is pooled to the pixels it has,
    keeping each block's largest-magnitude entry."""
    import tracemalloc

    from gradcli.compute.solve import jacobian
    from gradcli.render.plot import MAX_CELLS, _shrink, draw_plot

    spike = np.zeros((1000, 999))
    spike[500, 3], spike[0, 0] = -7.0, 2.0
    pooled = _shrink(spike)
    assert pooled.shape == (MAX_CELLS, MAX_CELLS) and (pooled.min(), pooled.max()) == (-7.0, 2.0)
    draw_plot(jacobian("softmax", input=np.ones((1, 3)), layout="full"), io.BytesIO())  # matplotlib loaded first
    result = jacobian("softmax", input=np.random.default_rng(0).standard_normal((1, 2500)), layout="full")
    tracemalloc.start()
    try:
        draw_plot(result, io.BytesIO())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < result.value.nbytes / 2, f"{peak} bytes to draw a {result.value.nbytes}-byte value"


def test_a_pt2_whose_entries_unpack_far_beyond_the_archive_is_refused_unread(pt2_bytes, tmp_path):
    """A zip bomb: the constants config deflated from 32 MB of spaces (1.5 GB made a 1.5 MB file take
    3.4 GB and 40 s); torch.export.save stores entries uncompressed, so such an archive is refused."""
    source = zipfile.ZipFile(io.BytesIO(pt2_bytes))
    path = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("_constants_config.json"):
                entry = zipfile.ZipInfo(info.filename)
                entry.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(entry, data.rstrip() + b" " * (32 << 20))
            else:
                out.writestr(info, data)
    assert path.stat().st_size < 1 << 20
    assert_usage_error(runner.invoke(app, ["jacobian", str(path), "-x", "randn:4,3"]), "bomb.pt2", "unpacks to")


def _deflated(source: Path, path: Path) -> None:
    """``source`` (a zip torch wrote, entries stored) rewritten with every entry deflated: small on disk."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(path, "w") as out:
        for info in archive.infolist():
            entry = zipfile.ZipInfo(info.filename)
            entry.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(entry, archive.read(info.filename))
    assert path.stat().st_size < 1 << 20


def test_a_pt_file_is_sized_by_what_its_entries_unpack_to_before_torch_reads_it(tmp_path):
    """torch.load accepts deflated entries: a 40 KB file of 5*10^6 zeros was read into 40 MB
    before the tensor's size was checked against --max-memory 4MiB."""
    import torch

    torch.save(torch.zeros(5_000_000, dtype=torch.float64), tmp_path / "plain.pt")
    _deflated(tmp_path / "plain.pt", tmp_path / "z.pt")
    loads = []
    original = torch.load
    torch.load = lambda *a, **k: loads.append(a) or original(*a, **k)
    try:
        result = runner.invoke(app, ["jacobian", "exp", "-x", str(tmp_path / "z.pt"), "--max-memory", "4MiB"])
    finally:
        torch.load = original
    assert_usage_error(result, "--input", "z.pt (unpacked)", "--max-memory")
    assert loads == [], "torch.load ran before the refusal"


def test_a_torchscript_model_whose_entries_unpack_far_beyond_the_file_is_refused(tmp_path):
    """torch.jit.load unpacks deflated entries: a module holding 32 MB of zeros fits in a 40 KB file."""
    import torch

    module = torch.jit.script(torch.nn.Linear(2000, 2000).double().requires_grad_(False).apply(
        lambda m: torch.nn.init.zeros_(m.weight) if isinstance(m, torch.nn.Linear) else None))
    torch.jit.save(module, tmp_path / "plain.pt")
    _deflated(tmp_path / "plain.pt", tmp_path / "z.pt")
    assert_usage_error(runner.invoke(app, ["jacobian", str(tmp_path / "z.pt"), "-x", "randn:1,2000"]),
                       "z.pt", "unpacks to")


def test_eig_beyond_the_argument_size_gives_every_eigenvalue():
    """--eig K with K above the argument's n on the Lanczos path was an internal IndexError."""
    import gradcli

    x, w = np.random.default_rng(0).standard_normal((5, 4)), np.random.default_rng(1).standard_normal((3, 4))
    t = np.random.default_rng(2).random((5, 3))
    dense = gradcli.hessian("linear,binary_cross_entropy_with_logits", input=x, weight=w, target=t, wrt="weight",
                            layout="full").value.reshape(12, 12)
    spectrum = gradcli.hessian("linear,binary_cross_entropy_with_logits", input=x, weight=w, target=t, wrt="weight",
                               eig=1000).spectrum
    expected = np.linalg.eigvalsh(dense)
    tol = np.finfo(np.float64).eps ** 0.6 * np.abs(expected).max()
    np.testing.assert_allclose(spectrum.smallest, expected, atol=tol)
    np.testing.assert_allclose(spectrum.largest, expected, atol=tol)


def test_two_user_files_importing_their_own_same_named_helper_each_get_theirs(tmp_path):
    """a/model.py and b/model.py each `import helper` from their folder: in one process (a suite, the
    library) the second found the first's helper in sys.modules and ran it, so b's check passed on
    a's code; an `import helper` inside the function failed at call time (folder not on sys.path)."""
    import gradcli

    for folder, k in (("a", 2.0), ("b", 3.0)):
        (tmp_path / folder / "pkg").mkdir(parents=True)
        (tmp_path / folder / "helper.py").write_text(f"k = {k}\n")
        (tmp_path / folder / "pkg" / "__init__.py").write_text(f"k = {10 * k}\n")
        (tmp_path / folder / "model.py").write_text("import helper\nimport pkg\n\n"
                                                    "def f(x):\n    return helper.k * x + pkg.k * x\n\n"
                                                    "def lazy(x):\n    import helper\n    return helper.k * x\n")
    for folder, k in (("a", 2.0), ("b", 3.0), ("a", 2.0)):
        assert gradcli.grad(f"{tmp_path}/{folder}/model.py:f", input=np.array(1.0)).value == 11 * k
        assert gradcli.grad(f"{tmp_path}/{folder}/model.py:lazy", input=np.array(1.0)).value == k


def test_a_seed_torch_cannot_take_is_refused_as_an_option_not_blamed_on_your_code(tmp_path):
    """--seed 2**64 with a dropout model: torch.manual_seed overflowed inside the call, reported as
    'your code raised ValueError' (exit 3)."""
    (tmp_path / "drop.py").write_text("import torch\nnet = torch.nn.Sequential(torch.nn.Linear(4, 3), "
                                      "torch.nn.Dropout(0.5))\n")
    assert_usage_error(runner.invoke(app, ["jacobian", f"{tmp_path}/drop.py:net", "-x", "randn:2,4",
                                           "--seed", str(2**64)]), "--seed")
    assert runner.invoke(app, ["jacobian", f"{tmp_path}/drop.py:net", "-x", "randn:2,4",
                               "--seed", str(2**64 - 1)]).exit_code == 0


def test_a_suite_file_that_never_ends_is_refused_not_read_into_memory(tmp_path):
    """`check --suite /dev/zero` read until memory ran out: an internal MemoryError. A device is no
    suite file (issue 24: non-regular files are refused, as array options refuse them)."""
    result = gradcli("check", "--suite", "/dev/zero", limit_mib=1024)
    assert_usage_error(result, "--suite", "/dev/zero", "not a regular file")


def test_a_baseline_that_never_ends_is_read_only_to_the_limit():
    """--baseline /dev/zero (size 0 to stat) was read until memory ran out; a device is no baseline
    file (issue 24), and a regular one is read only to the limit (test_baselines)."""
    result = gradcli(*CHECK_EXP, "-x", "[1.0]", "--baseline", "/dev/zero", "--max-memory", "1MiB", limit_mib=1024)
    assert_usage_error(result, "--baseline", "/dev/zero", "not a regular file")


def test_an_empty_rows_option_is_refused_not_read_as_every_row():
    """--rows '' (an unset shell variable: --rows "$ROWS") computed every row, silently."""
    assert_usage_error(runner.invoke(app, ["jacobian", "softmax", "-x", "randn:4,3", "--rows", ""]), "--rows")


@pytest.mark.parametrize("option", ["--baseline", "--output", "--backends", "--reference", "--save-baseline"])
def test_an_option_given_as_an_empty_text_is_refused_not_read_as_absent(option):
    """`--baseline "$BASELINE"` with the variable unset compared nothing and passed (exit 0);
    `-o ''` wrote nothing; `--backends ''` ran the defaults."""
    result = runner.invoke(app, [*CHECK_EXP, "-x", "[1.0]", option, ""])
    assert_usage_error(result, option, "empty value")


def test_a_suite_entry_with_an_empty_value_is_refused(tmp_path):
    """`baseline = ""` in an entry compared nothing and the entry passed."""
    (tmp_path / "s.toml").write_text('[[check]]\nfunction = "exp"\ninput = "[1.0]"\nbaseline = ""\n')
    assert_usage_error(runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml")]), "'exp'", "--baseline",
                       "empty value")
