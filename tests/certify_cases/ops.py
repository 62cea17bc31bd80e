"""torch.library custom ops: one correct, one whose backward uses sin instead of cos, one with a wrong fake kernel."""

import torch


@torch.library.custom_op("gradcli_certify::sine", mutates_args=())
def sine(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x)


@sine.register_fake
def _(x):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return grad * torch.cos(x)


sine.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("gradcli_certify::sine_wrong_backward", mutates_args=())
def sine_wrong_backward(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x)


@sine_wrong_backward.register_fake
def _(x):
    return torch.empty_like(x)


def _wrong_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return grad * torch.sin(x)  # the bug: sin, not cos


sine_wrong_backward.register_autograd(_wrong_backward, setup_context=_setup)


@torch.library.custom_op("gradcli_certify::sine_wrong_fake", mutates_args=())
def sine_wrong_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x)


@sine_wrong_fake.register_fake
def _(x):
    return x.new_empty(x.shape[:-1])  # the bug: drops the last dimension


sine_wrong_fake.register_autograd(_backward, setup_context=_setup)

sine_packet = torch.ops.gradcli_certify.sine  # the same correct op, as torch.ops.NS.OP
