"""User code's per-sample blocks computed slice by slice of the batch (issue 25, bench
row 13): each slice's forward and backward passes run back to back while its
activations stay in cache. The slices must give torch's blocks exactly, and the
code must fall back to the whole batch wherever a slice is another function: a
model that refuses other batch sizes, code that divides by the batch size, a
second per-sample array, dropout in training mode.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import gradcli
from gradcli.backends import autograd

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.fc = nn.Linear(3 * 5 * 5, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))


    class FixedBatch(nn.Module):
        def forward(self, x):
            assert x.shape[0] == 7, "exported for a batch of 7"
            return torch.sin(x).flatten(1)[:, :4]


    class PerBatch(nn.Module):
        """No sample reads another, but every output is divided by the batch size."""

        def forward(self, x):
            return torch.tanh(x).flatten(1)[:, :4] / x.shape[0]


    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(50, 4)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(self.fc(x.flatten(1)))


    conv = Conv().eval()
    fixed = FixedBatch()
    per_batch = PerBatch()
    dropped = Dropped().train()
''')


@pytest.fixture
def models(tmp_path, monkeypatch):
    path = tmp_path / "sliced.py"
    path.write_text(MODELS)
    slices = []
    real = autograd.AutogradBackend._fill

    def fill(self, torch_, F, x0, *args):  # records the rows each backward loop ran on
        slices.append(int(x0.shape[0]))
        return real(self, torch_, F, x0, *args)

    monkeypatch.setattr(autograd.AutogradBackend, "_fill", fill)
    monkeypatch.setattr(autograd, "SLICE_BYTES", 1)  # one row per slice after the first: many slices, an uneven end
    import importlib.util

    spec = importlib.util.spec_from_file_location("sliced_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(path), module, slices


def torch_blocks(fn, x):
    """vmap(jacrev) over the samples, reshaped (B, F_out, F_in)."""
    b = x.shape[0]
    return torch.func.vmap(torch.func.jacrev(lambda s: fn(s[None])[0]))(torch.tensor(x)).detach().numpy() \
        .reshape(b, -1, int(np.prod(x.shape[1:])))


def test_slices_give_vmap_jacrev_blocks(models):
    path, module, slices = models
    x = np.random.default_rng(0).standard_normal((7, 2, 5, 5))
    res = gradcli.jacobian(f"{path}:conv", input=x, layout="blocks", backend="autograd")
    assert slices == [4, 1, 1, 1]  # the first slice of FIRST_SLICE rows, then one row each
    np.testing.assert_allclose(res.value.reshape(7, 4, 50), torch_blocks(module.conv.double(), x), atol=1e-14)
    with torch.no_grad():
        np.testing.assert_allclose(res.output, module.conv(torch.tensor(x)).numpy(), atol=1e-14)


@pytest.mark.parametrize("name", ["fixed", "per_batch"])
def test_code_whose_slices_are_another_function_runs_on_the_whole_batch(models, name):
    """A slice of a model exported for batch 7 raises; dividing by the batch size gives other
    outputs on a slice. Both are caught and the blocks come from the whole batch, as torch's."""
    path, module, slices = models
    x = np.random.default_rng(1).standard_normal((7, 2, 5, 5))
    res = gradcli.jacobian(f"{path}:{name}", input=x, layout="blocks", backend="autograd")
    assert slices[-1] == 7  # the last backward loop ran on the whole batch
    full = torch.autograd.functional.jacobian(getattr(module, name), torch.tensor(x)).numpy().reshape(7, 4, 7, 50)
    np.testing.assert_allclose(res.value.reshape(7, 4, 50), full[np.arange(7), :, np.arange(7)], atol=1e-14)


def test_dropout_in_training_mode_is_never_sliced(models):
    """A slice would draw other masks than the whole batch's one (the mask of the note)."""
    path, _, slices = models
    x = np.random.default_rng(2).standard_normal((7, 2, 5, 5))
    gradcli.jacobian(f"{path}:dropped", input=x, layout="blocks", backend="autograd")
    assert slices == [7]
