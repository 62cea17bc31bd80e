"""Seeded faults, one model (a loss of (x, target)) each; the line of each fault is marked `# FAULT`."""

import torch
from torch import nn
import torch.nn.functional as F


def seeded(make):
    torch.manual_seed(0)
    return make()


class Head(nn.Module):
    """A loss over a body: Linear(8 -> 8) body layers, a 3-class head."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.head = nn.Linear(8, 3)

    def forward(self, x, target):
        return F.cross_entropy(self.head(self.body(x)), target)


class SqrtOfNegative(nn.Module):
    def forward(self, x):
        return torch.sqrt(x - 10.0)  # FAULT sqrt_forward


class LogOfNegative(nn.Module):
    def forward(self, x):
        return torch.log(x - 10.0)  # FAULT log_forward


class DivideByZero(nn.Module):
    def forward(self, x):
        return x / (x - x)  # FAULT div_forward


class SelfDistance(nn.Module):
    """Each sample's distance to an anchor, written sqrt(sum((x - a)²)); the anchor is the sample
    itself, so the distance is 0: a finite forward, and sqrt's backward at 0 is inf."""

    def forward(self, x):
        anchor = x.clone()
        distance = torch.sqrt(((x - anchor) ** 2).sum(1, keepdim=True))  # FAULT sqrt_backward
        return x + distance


class MaskedSqrt(nn.Module):
    """torch.where(x > 0, sqrt(x), 0): sqrt of the negative entries is NaN but masked in the
    forward; its backward multiplies the zero gradient by that NaN."""

    def forward(self, x):
        return torch.where(x > 0, torch.sqrt(x), torch.zeros_like(x))  # FAULT masked_sqrt


class NaNBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")  # FAULT custom_backward


class CustomOp(nn.Module):
    def forward(self, x):
        return NaNBackward.apply(x)  # APPLY custom_backward


class ExpOverflow(nn.Module):
    def forward(self, x):
        return torch.exp(x * 1000.0)  # FAULT exp_forward


class MaskedSoftmax(nn.Module):
    """Attention weights over a row whose every entry is masked: -inf is deliberate, the NaN is not."""

    def forward(self, x):
        scores = x.masked_fill(torch.ones_like(x, dtype=torch.bool), float("-inf"))
        return torch.softmax(scores, dim=-1)  # FAULT softmax_forward


class SoftmaxByHand(nn.Module):
    """exp overflows to inf, and the normalisation then makes inf / inf = NaN: the exp is the fault."""

    def forward(self, x):
        e = torch.exp(x * 1000.0)  # FAULT exp_then_divide
        return e / e.sum(1, keepdim=True)


class Entropy(nn.Module):
    """p log p with p = 0: log(0) = -inf, then 0 * -inf = NaN: the log is the fault (xlogy is not)."""

    def forward(self, x):
        p = torch.relu(x)
        logp = torch.log(p)  # FAULT log_then_multiply
        return x + p * logp


class Angle(nn.Module):
    """The angle between a sample and itself: acos(1) = 0, whose derivative is infinite."""

    def forward(self, x):
        cos = F.cosine_similarity(x, x.clone(), dim=1).clamp(-1, 1)
        return x + torch.acos(cos).unsqueeze(1)  # FAULT acos_backward


def body(*middle):
    return nn.Sequential(nn.Linear(8, 8), nn.Tanh(), *middle, nn.Linear(8, 8), nn.Tanh())


sqrt_forward = seeded(lambda: Head(body(SqrtOfNegative())))
log_forward = seeded(lambda: Head(body(LogOfNegative())))
div_forward = seeded(lambda: Head(body(DivideByZero())))
sqrt_backward = seeded(lambda: Head(body(SelfDistance())))
masked_sqrt = seeded(lambda: Head(body(MaskedSqrt())))
custom_backward = seeded(lambda: Head(body(CustomOp())))
exp_forward = seeded(lambda: Head(body(ExpOverflow())))
softmax_forward = seeded(lambda: Head(body(MaskedSoftmax())))
acos_backward = seeded(lambda: Head(body(Angle())))
exp_then_divide = seeded(lambda: Head(body(SoftmaxByHand())))
log_then_multiply = seeded(lambda: Head(body(Entropy())))


class Scaled(nn.Module):
    """A stack of Linear(16 -> 16) + Tanh; layer `k` has its weight scaled ×40."""

    def __init__(self, depth=8, k=4, scale=40.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(depth))
        with torch.no_grad():
            self.layers[k].weight.mul_(scale)
        self.head = nn.Linear(16, 3)

    def forward(self, x, target):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return F.cross_entropy(self.head(x), target)


scaled40 = seeded(Scaled)


class SigmoidStack(nn.Module):
    def __init__(self, depth=12):
        super().__init__()
        self.layers = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(16, 16), nn.Sigmoid())])
        with torch.no_grad():
            for m in self.layers:
                if isinstance(m, nn.Linear):
                    m.weight.mul_(4.0)
                    m.bias.fill_(12.0)  # every sigmoid near 1: its derivative ~6e-6
        self.head = nn.Linear(16, 3)

    def forward(self, x, target):
        return F.cross_entropy(self.head(self.layers(x)), target)


saturated = seeded(SigmoidStack)


class DeadReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc1.bias.fill_(-100.0)  # FAULT dead_relu: every unit negative for every sample

    def forward(self, x, target):
        return F.cross_entropy(self.fc2(self.act(self.fc1(x))), target)


dead_relu = seeded(DeadReLU)


class MixedWidths(nn.Module):
    """8 -> 32 -> 32 -> 3 with ReLU; the middle layer scaled ×40 (its peers have other shapes)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        with torch.no_grad():
            self.fc2.weight.mul_(40.0)

    def forward(self, x, target):
        return F.cross_entropy(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x))))), target)


class RootForward(nn.Module):
    """The NaN made by the model's own forward, outside any submodule."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x, target):
        h = torch.log(self.fc(x) - 100.0)  # FAULT root_forward
        return F.cross_entropy(self.head(h), target)


class RootBackward(nn.Module):
    """sqrt at 0 in the model's own forward: finite forward, inf backward, outside any submodule."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x, target):
        h = self.fc(x)
        spread = torch.sqrt(((h - h.detach()) ** 2).sum(1, keepdim=True))  # FAULT root_backward
        return F.cross_entropy(self.head(h + spread), target)


scaled_mixed = seeded(MixedWidths)
root_forward = seeded(RootForward)
root_backward = seeded(RootBackward)
