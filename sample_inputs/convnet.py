"""Story 3's network: conv -> tanh -> linear, a classifier of 1x6x6 images into 3 classes.

    gradcli jacobian sample_inputs/convnet.py:net -x sample_inputs/images.npy --layout blocks
"""

import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


net = ConvNet().eval()


class Loss(nn.Module):
    """The network and its cross-entropy loss, so that --wrt param:NAME gives a weight's gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ConvNet()

    def forward(self, input, target):
        return nn.functional.cross_entropy(self.net(input), target)


loss = Loss()
