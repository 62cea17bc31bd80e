"""A 784-512-512-10 MLP classifier and its cross-entropy loss (670k parameters):
the model `gradcli check` verifies in probe mode, every parameter at once.

    gradcli check sample_inputs/mlp.py:loss -x randn:32,784 -t randint:10:32 --wrt 'param:*'

`loss` is a module taking (input, target), so `--wrt param:NAME` (and globs such
as `param:fc1.*`) name its parameters; `net` is the classifier alone.
"""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, sizes=(784, 512, 512, 10)) -> None:
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(sizes[2], sizes[3])

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class MLPLoss(MLP):
    """The network and its mean cross-entropy loss: a scalar, so `check` compares gradients.
    Its parameters are the network's own (`fc1.weight`, ...), its submodules `fc1` ... `fc3`."""

    def forward(self, input, target):
        return nn.functional.cross_entropy(super().forward(input), target)


def _seeded(make):
    torch.manual_seed(0)  # the same weights in every run
    return make()


net = _seeded(MLP)
loss = _seeded(MLPLoss)  # the same weights as net
