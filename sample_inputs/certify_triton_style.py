"""A kernel wrapper in the style of a Triton op: backward hands a flat buffer to a
"kernel" that walks memory as if the tensor were contiguous (`kernel` stands in
for a Triton launch given `grad.data_ptr()`). gradcheck passes it: its
grad_outputs are always contiguous. A transposed grad_output (the gradient of
`y.T @ w`) gives a wrong gradient, silently; the expanded one of `y.sum()` reads
past the end of its buffer (a real kernel reads whatever lies there; here
`as_strided` refuses). `gradcli certify` names it (the non-contiguous row) with a
one-line reproducer; `ScaledSwishFixed` is the fix (`grad.contiguous()`).

    gradcli certify sample_inputs/certify_triton_style.py:ScaledSwish -x randn:32,16 --skip compile
"""

import torch


def kernel(x_flat, g_flat):
    """The 'Triton kernel': reads both buffers in memory order, element by element."""
    s = torch.sigmoid(x_flat)
    return g_flat * (s + x_flat * s * (1 - s))


def flat(t):
    """What a kernel launch sees: the storage from the tensor's first element, in memory order."""
    return torch.as_strided(t, (t.numel(),), (1,))


class ScaledSwish(torch.autograd.Function):
    """swish(x) = x sigmoid(x)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return kernel(flat(x.contiguous()), flat(grad)).view(x.shape)  # the bug: grad may not be contiguous


class ScaledSwishFixed(ScaledSwish):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return kernel(flat(x.contiguous()), flat(grad.contiguous())).view(x.shape)
