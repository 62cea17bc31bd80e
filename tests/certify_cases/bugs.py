"""Custom autograd.Functions, each with one planted bug (issue 26's table and more).

Each is right where gradcheck looks (float64, contiguous grad_outputs, no edits
between forward and backward) and wrong where its users will be.
"""

import torch
from clean import Linear  # (this folder is on sys.path while certify loads the file)


class _Sine(torch.autograd.Function):
    """sin, correct: the base the planted bugs change one thing of."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


class ContiguousAssumed(_Sine):
    """Reads grad_output's memory as if contiguous (as a Triton kernel given grad.data_ptr() does)."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        flat = torch.as_strided(grad, (grad.numel(),), (1,))  # the bug: assumes strides (n, 1)
        return (flat * torch.cos(x).reshape(-1)).view(x.shape)


class KeepsInput(_Sine):
    """Keeps its input as ctx.x instead of save_for_backward: an in-place edit goes unnoticed."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x = inputs[0]  # the bug: no version counter watches it

    @staticmethod
    def backward(ctx, grad):
        return grad * torch.cos(ctx.x)


class MutatesGrad(_Sine):
    """Multiplies grad_output in place."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.mul_(torch.cos(x))  # the bug: writes into its grad_output


class NaiveSigmoid(torch.autograd.Function):
    """sigmoid whose backward computes exp(x) / (1 + exp(x)): inf / inf = NaN at x = 100 in float32."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        e = torch.exp(x)
        s = e / (1 + e)  # the bug: overflows where sigmoid itself does not
        return grad * s * (1 - s)


class DetachedBackward(_Sine):
    """Right gradient, but computed from x.detach(): the second derivative is lost."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x.detach())  # the bug: a constant to double backward


class OldStyle(torch.autograd.Function):
    """forward(ctx, x) without setup_context: torch.func.grad / vmap(grad) raise."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


class WrongGradDtype(_Sine):
    """Returns a float32 gradient whatever the input's dtype (autograd casts it back, silently)."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return (grad * torch.cos(x)).float()  # the bug: half the digits of a float64 gradient are lost


class Nondeterministic(_Sine):
    """Sums three parts of the gradient in a random order, as atomic adds do: the last bits change run to run."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        full = grad * torch.cos(x)
        parts = torch.stack([full * 0.1, full * 0.2, full * 0.7])[torch.randperm(3)]
        return (parts[0] + parts[1]) + parts[2]  # the bug: the order depends on the random draw


class LinearNoAutocast(Linear):
    """x @ w whose backward mixes dtypes under autocast: the bfloat16 grad_output meets float32 saved inputs."""

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.mT, x.mT @ grad  # the bug: grad is bfloat16 under autocast, x and w float32


class WrongJvp(_Sine):
    """A right backward, a jvp off by a factor of 1.5 (a forward-mode formula typo)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.x = inputs[0]  # (forward mode reads it: jvp runs before any saved tensor could be unpacked)

    @staticmethod
    def jvp(ctx, tangent):
        return 1.5 * tangent * torch.cos(ctx.x)  # the bug: cos(x) u is right


class RefusesZeroGrad(_Sine):
    """Raises in backward on an all-zero grad_output (a normalisation that asserts)."""

    @staticmethod
    def backward(ctx, grad):
        if not bool(grad.any()):
            raise ValueError("grad_output is all zeros")  # the bug: a zero grad_output is a valid one
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)
