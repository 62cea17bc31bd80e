"""A custom autograd.Function whose hand-written backward is wrong for x > 1
(it should be 2 x everywhere): `gradcli check` catches it and names the entries.

    gradcli check sample_inputs/custom_square.py:square -x '[0.5, 2.0, -1.0, 3.0]'
"""

import torch


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x > 1, 3 * x, 2 * x) * grad  # the bug: 3 x where x > 1


def square(x):
    return Square.apply(x)
