"""A custom autograd.Function whose backward is right (2 x) but not differentiable as
written: it uses x.detach(), so its own derivative is lost. `gradcli check` passes it;
`gradcli check --quantity hessian` fails it.

    gradcli check sample_inputs/detached_backward.py:loss -x '[0.5, -1.5, 2.0]' --quantity hessian
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
        return 2 * x.detach() * grad  # right value, but a constant to double backward


def loss(x):
    return Square.apply(x).sum() + (x**3).sum() / 3
