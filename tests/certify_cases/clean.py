"""Correct custom Functions (and a callable) that certify must pass in float32 and bfloat16:
precision-sensitive ones (logsumexp, a layer norm with a hand-written backward, sigmoid
through its output, a matmul), once_differentiable, no jvp, two inputs, two outputs. The
softplus with a jvp is sample_inputs/certify_softplus.py."""

import torch
from torch.autograd.function import once_differentiable


class LogSumExp(torch.autograd.Function):
    """Row-wise logsumexp, shifted by the row maximum; backward: grad times softmax."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        m = x.amax(-1, keepdim=True)
        return (m + torch.log(torch.exp(x - m).sum(-1, keepdim=True))).squeeze(-1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return grad.unsqueeze(-1) * torch.exp(x - y.unsqueeze(-1))


class LayerNorm(torch.autograd.Function):
    """Normalisation over the last axis, with the textbook hand-written backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])  # (statistics recomputed in backward: differentiable twice)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        centred = x - x.mean(-1, keepdim=True)
        std = torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-5)
        xhat = centred / std
        g_mean = grad.mean(-1, keepdim=True)
        gx_mean = (grad * xhat).mean(-1, keepdim=True)
        return (grad - g_mean - xhat * gx_mean) / std


class SigmoidFromOutput(torch.autograd.Function):
    """sigmoid, whose backward is y (1 - y) from the saved output."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y * (1 - y)


class OnceDifferentiable(torch.autograd.Function):
    """sin with a backward declared once differentiable."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)


class TanhNoJvp(torch.autograd.Function):
    """tanh without jvp and without a vmap rule."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class ScaledTanh(torch.autograd.Function):
    """x * tanh(w): two differentiated inputs."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x * torch.tanh(w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        t = torch.tanh(w)
        return grad * t, grad * x * (1 - t * t)


class Linear(torch.autograd.Function):
    """x @ w: a reduction, sensitive to bfloat16."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x @ w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad = grad.to(x.dtype)  # under autocast the output (and so grad) is bfloat16, the saved inputs float32
        return grad @ w.mT, x.mT @ grad


class SinCos(torch.autograd.Function):
    """Two outputs; backward handles an undefined (None) grad_output for either."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sin(x), torch.cos(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        out = torch.zeros_like(x)
        if grad_sin is not None:
            out = out + grad_sin * torch.cos(x)
        if grad_cos is not None:
            out = out - grad_cos * torch.sin(x)
        return out


def plain(x):
    """A callable of torch ops: autograd's own derivative."""
    return 2 * torch.tanh(x) + SigmoidFromOutput.apply(x)


class Scaled(torch.autograd.Function):
    """x * alpha for a number alpha (not differentiated: its gradient is None)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, alpha=2.5):
        return x * alpha

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.alpha = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.alpha, None


class Exp(TanhNoJvp):
    """exp, its backward from the saved output: in float32 it overflows past 88.7 exactly as torch.exp does."""

    @staticmethod
    def forward(x):
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y
