"""A sequence classifier with a NaN in its gradient (docs/health.md walks through finding it).

Sequences of 6 positions with 16 features, padded with zero vectors after their length
(sample_inputs/sequences.npy, labels in sequence_labels.json). Each position's embedding
is normalised to unit length by `UnitNorm`, whose eps keeps the forward finite at a padded
(zero) position, 0 / (0 + eps) = 0: the loss is finite. Its backward is not: the derivative
of sqrt at 0 is infinite. One optimizer step later every weight is NaN.

    gradcli health sample_inputs/pooling.py:loss -x sample_inputs/sequences.npy -t sample_inputs/sequence_labels.json
"""

import torch
from torch import nn


class UnitNorm(nn.Module):
    """x / (‖x‖ + eps) along the features."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x):
        norm = torch.sqrt((x * x).sum(-1, keepdim=True))
        return x / (norm + self.eps)


class Encoder(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(16, width, bias=False)  # a padded (zero) position stays zero
        self.norm = UnitNorm()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x):
        h = self.norm(self.embed(x))
        return h + self.mlp(h)


class Classifier(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = Encoder()
        self.head = nn.Linear(32, classes)

    def forward(self, x, labels):
        return nn.functional.cross_entropy(self.head(self.encoder(x).mean(1)), labels)


loss = Classifier()
