"""Clean models (each a loss of (x, target) on x of shape (16, 8), 3 classes): no flag should be raised.

Each exercises something the hooks must leave alone: in-place activations, a module called twice,
tied weights, residual connections, nested containers, batch norm in training mode, attention
(`query is key` decides its path), a recurrent layer returning a tuple, a module never run.
"""

import torch
from torch import nn
import torch.nn.functional as F


def seeded(make):
    torch.manual_seed(0)
    return make()


class TanhMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x, target):
        return F.cross_entropy(self.layers(x), target)


class Block(nn.Module):
    """x + f(norm(x)): a residual branch."""

    def __init__(self, width=16):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.branch = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x):
        return x + self.branch(self.norm(x))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.blocks = nn.Sequential(nn.Sequential(Block(), Block()), Block())  # nested containers
        self.head = nn.Linear(16, 3)
        self.unused = nn.Linear(16, 16)  # never run: absent from the modules, no gradient

    def forward(self, x, target):
        return F.cross_entropy(self.head(self.blocks(self.embed(x))), target)


class InplaceReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(32, 32)
        self.act2 = nn.ReLU(inplace=True)
        self.fc3 = nn.Linear(32, 3)

    def forward(self, x, target):
        return F.cross_entropy(self.fc3(self.act2(self.fc2(self.act1(self.fc1(x))))), target)


class Shared(nn.Module):
    """One Linear called twice (a module used twice), and a decoder tied to the encoder's weight."""

    def __init__(self):
        super().__init__()
        self.encode = nn.Linear(8, 16)
        self.mix = nn.Linear(16, 16)
        self.decode = nn.Linear(16, 8)
        self.decode.weight = nn.Parameter(self.encode.weight.t().detach().clone())
        self.tied = nn.Linear(16, 8, bias=False)
        self.tied.weight = self.decode.weight  # the same Parameter under two names
        self.head = nn.Linear(8, 3)

    def forward(self, x, target):
        h = torch.tanh(self.mix(torch.tanh(self.mix(torch.tanh(self.encode(x))))))
        return F.cross_entropy(self.head(self.decode(h) + self.tied(h)), target)


class ConvNet(nn.Module):
    """On (16, 8) inputs seen as (16, 2, 2, 2) images: conv, batch norm (training mode), in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.head = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x, target):
        return F.cross_entropy(self.head(self.features(x.reshape(-1, 2, 2, 2)).flatten(1)), target)


class Attention(nn.Module):
    """Self-attention (query is key is value) in a transformer encoder layer, dropout off."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(2, 16)
        self.layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x, target):
        h = self.layer(self.embed(x.reshape(-1, 4, 2)))
        return F.cross_entropy(self.head(h.mean(1)), target)


class Recurrent(nn.Module):
    """An LSTM returns (output, (h, c)): a tuple."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x, target):
        out, _ = self.lstm(x.reshape(-1, 4, 2))
        return F.cross_entropy(self.head(out[:, -1]), target)


class Xavier(nn.Module):
    """Widths 8 -> 4 -> 256 -> 3 under Xavier's init, whose gains depend on the shapes (unlike torch's default)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 256), nn.Tanh(), nn.Linear(256, 3))
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x, target):
        return F.cross_entropy(self.layers(x), target)


class TiedLM(nn.Module):
    """A language model whose decoder is tied to its nn.Embedding (N(0, 1) entries, not a Linear's init)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.rnn = nn.GRU(32, 32, batch_first=True)
        self.norm = nn.LayerNorm(32)
        self.decode = nn.Linear(32, 50, bias=False)
        self.decode.weight = self.embed.weight

    def forward(self, x, target):
        tokens = (x.abs() * 10).long().clamp(max=49)  # (16, 8) token ids made from the batch
        h, _ = self.rnn(self.embed(tokens))
        logits = self.decode(self.norm(h))
        return F.cross_entropy(logits[:, :-1].reshape(-1, 50), tokens[:, 1:].reshape(-1))


tanh_mlp = seeded(TanhMLP)
xavier = seeded(Xavier)
residual = seeded(Residual)
inplace = seeded(InplaceReLU)
shared = seeded(Shared)
convnet = seeded(ConvNet)
attention = seeded(Attention)
recurrent = seeded(Recurrent)
tied_lm = seeded(TiedLM)
CLEAN = ["tanh_mlp", "residual", "inplace", "shared", "convnet", "attention", "recurrent", "xavier"]
