"""A correct custom autograd.Function, the way torch.func wants one (forward without ctx,
setup_context, a vmap rule, a jvp): `gradcli certify` passes it.

    gradcli certify sample_inputs/certify_softplus.py:Softplus -x randn:64,64 --skip compile
"""

import torch


class Softplus(torch.autograd.Function):
    """log(1 + exp(x)), stable for large x; its derivative is sigmoid(x)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.nn.functional.softplus(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)

    @staticmethod
    def jvp(ctx, x_t):
        (x,) = ctx.saved_tensors
        return x_t * torch.sigmoid(x)
