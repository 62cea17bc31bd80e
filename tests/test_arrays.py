"""Every ARRAY form of SPEC §2, and the refusals."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from gradcli.io.arrays import check_finite, load_array
from gradcli.core.errors import UsageError


def test_npy(tmp_path):
    a = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_array(str(tmp_path / "a.npy"), "--input"), a)


def test_npz_with_and_without_key(tmp_path):
    a, b = np.ones((2, 2)), np.arange(3)
    np.savez(tmp_path / "two.npz", logits=a, labels=b)
    np.savez(tmp_path / "one.npz", only=b)
    np.testing.assert_array_equal(load_array(f"{tmp_path}/two.npz:labels", "--target"), b)
    np.testing.assert_array_equal(load_array(f"{tmp_path}/one.npz", "--target"), b)
    with pytest.raises(UsageError, match=r"^input: .*holds 2 arrays .*name one") as refused:
        load_array(f"{tmp_path}/two.npz", "--input")
    assert refused.value.param == "input" and refused.value.cli_message().startswith("--input: ")
    with pytest.raises(UsageError, match=r"no array 'nope'.*logits, labels"):
        load_array(f"{tmp_path}/two.npz:nope", "--input")


def test_json_file_nested_list_and_dtype_object(tmp_path):
    (tmp_path / "t.json").write_text("[[1, 2], [3, 4]]")
    (tmp_path / "f.json").write_text('{"data": [1, 2, 3], "dtype": "float32"}')
    t = load_array(str(tmp_path / "t.json"), "--target")
    assert t.dtype == np.int64 and t.shape == (2, 2)
    f = load_array(str(tmp_path / "f.json"), "--input")
    assert f.dtype == np.float32


def test_pt_tensor_loaded_with_weights_only(tmp_path):
    torch.save(torch.arange(4, dtype=torch.float32), tmp_path / "x.pt")
    np.testing.assert_array_equal(load_array(str(tmp_path / "x.pt"), "--input"), np.arange(4, dtype=np.float32))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickles_are_never_loaded(tmp_path, capsys):
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UsageError, match="weights_only"):
        load_array(str(tmp_path / "evil.pt"), "--input")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="pickle"):
        load_array(str(tmp_path / "obj.npy"), "--input")
    assert "pwned" not in capsys.readouterr().out


def test_inline_json_and_scalars():
    assert load_array("[[0.1, 0.2, 0.3, 0.4]]", "--input").shape == (1, 4)
    t = load_array("[3]", "--target")
    assert t.dtype == np.int64 and t.tolist() == [3]
    assert load_array("2.5", "--input").shape == ()


def test_stdin_json_and_npy_bytes():
    assert load_array("-", "--input", stdin=io.BytesIO(b"[1.5, 2.5]")).tolist() == [1.5, 2.5]
    buf = io.BytesIO()
    np.save(buf, np.eye(2))
    np.testing.assert_array_equal(load_array("-", "--input", stdin=io.BytesIO(buf.getvalue())), np.eye(2))


@pytest.mark.parametrize("spec, shape, kind", [
    ("randn:3,5", (3, 5), "f"), ("rand:1,5", (1, 5), "f"), ("randint:5:3", (3,), "i"), ("arange:5,4", (5, 4), "i"),
    ("eye:2", (2, 2), "f"), ("ones:3,5", (3, 5), "f"), ("zeros:3", (3,), "f"),
])
def test_generators(spec, shape, kind):
    a = load_array(spec, "--input", seed=1)
    assert a.shape == shape and a.dtype.kind == kind
    np.testing.assert_array_equal(a, load_array(spec, "--input", seed=1))


def test_generators_are_seeded_per_option():
    x = load_array("randn:4", "--input", seed=0)
    assert not np.array_equal(x, load_array("randn:4", "--input", seed=1))
    assert not np.array_equal(x, load_array("randn:4", "--tangent", seed=0))
    r = load_array("randint:5:200", "--target")
    assert r.min() >= 0 and r.max() < 5


def test_shapeless_generators_take_the_implied_shape():
    assert load_array("ones", "--cotangent", like=(2, 3)).shape == (2, 3)
    with pytest.raises(UsageError, match="needs a shape"):
        load_array("randn", "--input")


@pytest.mark.parametrize("spec, message", [
    ("[true, false]", "boolean"),
    ('["a", "b"]', "string"),
    ("[[1, 2], [3]]", "ragged"),
    ("[]", "empty"),
    ("[[1, 2], {\"a\": 1}]", "object"),
    ("[1, null]", "null"),
    ("[1, 2", "not valid JSON"),
    ("nonsense", "not valid JSON"),
    ('{"data": [1], "dtype": "complex64"}', "unknown dtype"),
    ('{"values": [1]}', 'must look like'),
    ("randn:0,3", "bad shape"),
    ("randint:0:3", "HIGH > 0"),
    ("missing.npy", "file not found"),
    ("[" * 100000, "nested too deeply|not valid JSON"),
])
def test_refusals_name_the_option(spec, message):
    with pytest.raises(UsageError, match=rf"^input: .*({message})"):
        load_array(spec, "--input")


def test_truncated_npy_and_bad_npz(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((100, 100)))
    (tmp_path / "t.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:500])
    with pytest.raises(UsageError, match="truncated|not a valid"):
        load_array(str(tmp_path / "t.npy"), "--input")
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a valid .npz"):
        load_array(str(tmp_path / "b.npz"), "--input")


def test_boolean_npy_refused(tmp_path):
    np.save(tmp_path / "b.npy", np.array([True, False]))
    with pytest.raises(UsageError, match="booleans"):
        load_array(str(tmp_path / "b.npy"), "--input")


def test_nonfinite_names_the_first_bad_index():
    a = np.array([[1.0, 2.0], [np.inf, np.nan]])
    with pytest.raises(UsageError, match=r"^input: non-finite value inf at index \[1, 0\].*--allow-nonfinite"):
        check_finite(a, "--input")
    assert load_array(json.dumps([1.0, 2.0]), "--input").tolist() == [1.0, 2.0]
