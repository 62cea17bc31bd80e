"""A plain torch sequence tagger: embeddings, an LSTM, a linear head. It returns
a tuple (scores, (h_n, c_n)) and takes an optional mask as its second positional
parameter, as many models do.

    gradcli vjp sample_inputs/tagger.py:tagger -x sample_inputs/tags.json --select 0 --wrt act:embed
    gradcli vjp sample_inputs/tagger.py:tagger -x sample_inputs/tags.json --arg mask=sample_inputs/tag_mask.json \
        --select 0 --wrt mask
"""

import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(30, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, tokens, mask=None):
        hidden, state = self.lstm(self.embed(tokens))
        scores = self.head(hidden)
        if mask is not None:
            scores = scores * mask[..., None]
        return scores, state


tagger = Tagger().eval()
