"""A small CIFAR-style classifier (README story 3, the per-sample benchmark):
conv 3->16, conv 16->32 stride 2, linear to 10 classes, on (B, 3, 32, 32) images.

    gradcli jacobian sample_inputs/cnn.py:net -x sample_inputs/cifar.npy
    gradcli grad sample_inputs/cnn.py:loss -x sample_inputs/cifar.npy -t sample_inputs/cifar_labels.json \\
        --per-sample --norms --wrt 'param:*'
"""

import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


net = CNN().eval()


class Loss(nn.Module):
    """The classifier and its mean cross-entropy: --wrt param:NAME differentiates its weights."""

    def __init__(self) -> None:
        super().__init__()
        self.net = CNN()

    def forward(self, images, labels):
        return nn.functional.cross_entropy(self.net(images), labels)


loss = Loss().eval()
