"""The MLP of mlp.py with one planted bug: its second activation, `act2`, is a
custom autograd.Function whose backward is wrong for inputs above 0.5 (slope 1.5
instead of 1). `gradcli check` finds it and names the module:

    gradcli check sample_inputs/mlp_buggy.py:loss -x randn:32,784 -t randint:10:32 --wrt 'param:*'
"""

import torch
from torch import nn

from mlp import MLPLoss, _seeded


class LeakyBackwardReLU(torch.autograd.Function):
    """relu forward; the backward passes 1.5 g where x > 0.5 (the bug: it should pass g)."""

    @staticmethod
    def forward(x):
        return x.clamp(min=0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 0.5, 1.5, (x > 0).to(grad.dtype))


class CustomReLU(nn.Module):
    def forward(self, x):
        return LeakyBackwardReLU.apply(x)


def _buggy():
    model = MLPLoss()
    model.act2 = CustomReLU()
    return model


loss = _seeded(_buggy)
