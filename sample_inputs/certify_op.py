"""A correct torch.library custom op with its fake kernel and its autograd:
`gradcli certify` passes it, opcheck's four tests included (each a row).

    gradcli certify sample_inputs/certify_op.py:swish -x randn:64,64 --skip compile
"""

import torch


@torch.library.custom_op("gradcli_samples::swish", mutates_args=())
def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


@swish.register_fake
def _(x):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    s = torch.sigmoid(x)
    return grad * (s + x * s * (1 - s))


swish.register_autograd(_backward, setup_context=_setup)
