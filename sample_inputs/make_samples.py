"""Recreate the sample inputs (they are committed; run this only to change them).

    python sample_inputs/make_samples.py
"""

import json
from pathlib import Path

import numpy as np

here = Path(__file__).parent
rng = np.random.default_rng(7)

# Story 4: a batch of 5 rows of 4 logits (the softmax Jacobian is (5, 4, 5, 4), block-diagonal).
logits = np.round(rng.standard_normal((5, 4)) * 2, 2)
np.save(here / "logits.npy", logits)
# Stories 1 and 2: one class index per row (integers: never differentiated).
(here / "targets.json").write_text(json.dumps([3, 0, 1, 1, 2]) + "\n")
# Soft targets: a probability row per sample (differentiable with --wrt target).
soft = rng.dirichlet(np.ones(4), size=5).round(3)
soft[:, -1] = 1 - soft[:, :-1].sum(axis=1)
(here / "soft_targets.json").write_text(json.dumps(np.round(soft, 3).tolist()) + "\n")
(here / "class_weight.json").write_text(json.dumps([1.0, 2.0, 0.5, 1.0]) + "\n")
# A segmentation-style batch: (N, C, H, W) = (2, 3, 2, 2) logits and (2, 2, 2) class maps.
np.savez(here / "segmentation.npz", logits=np.round(rng.standard_normal((2, 3, 2, 2)), 2),
         labels=rng.integers(0, 3, size=(2, 2, 2)))
# Story 2: a Linear layer 4 -> 3 in front of the loss (weight (out, in), bias (out,)).
np.save(here / "linear_weight.npy", np.round(rng.standard_normal((3, 4)) * 0.5, 2))
(here / "linear_bias.json").write_text(json.dumps([0.1, -0.2, 0.05]) + "\n")
# Story 3: four 1x6x6 images for sample_inputs/convnet.py.
np.save(here / "images.npy", np.round(np.random.default_rng(11).standard_normal((4, 1, 6, 6)), 2))
# Story 3 on a CIFAR-sized net: eight 3x32x32 images and their labels for sample_inputs/cnn.py.
np.save(here / "cifar.npy", np.round(np.random.default_rng(13).standard_normal((8, 3, 32, 32)) * 0.5, 2).astype(np.float32))
(here / "cifar_labels.json").write_text(json.dumps([3, 8, 8, 0, 6, 6, 1, 6]) + "\n")
# gradcli health (docs/health.md): eight sequences of 6 positions x 16 features for sample_inputs/pooling.py,
# zero-padded after their lengths, and a class (of 4) each.
lengths = [6, 4, 5, 3, 6, 2, 5, 6]
sequences = np.round(np.random.default_rng(17).standard_normal((8, 6, 16)), 2).astype(np.float32)
for row, n in enumerate(lengths):
    sequences[row, n:] = 0.0
np.save(here / "sequences.npy", sequences)
(here / "sequence_labels.json").write_text(json.dumps([0, 3, 1, 2, 2, 0, 3, 1]) + "\n")

# "Your model as it is" (docs/models.md): inputs for sample_inputs/hf_models.py and tagger.py.
np.save(here / "pixels.npy", np.round(np.random.default_rng(17).standard_normal((2, 3, 16, 16)), 2).astype(np.float32))
(here / "tokens.json").write_text(json.dumps(np.random.default_rng(19).integers(1, 50, (2, 8)).tolist()) + "\n")
(here / "tags.json").write_text(json.dumps(np.random.default_rng(23).integers(0, 30, (2, 6)).tolist()) + "\n")
(here / "tag_mask.json").write_text(json.dumps([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0], [1.0] * 6]) + "\n")


def trained_vit() -> None:
    """vit.safetensors: trained weights for hf_models.py:vit (84 KB, float32), written with
    safetensors' save_model: a few steps of SGD on the pixels and fixed labels, so they differ from
    the initialisation hf_models.vit() builds."""
    import torch
    from safetensors.torch import save_model

    import hf_models

    model = hf_models.vit().train()
    pixels = torch.from_numpy(np.load(here / "pixels.npy"))
    labels = torch.tensor([2, 0])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        model(pixel_values=pixels, labels=labels).loss.backward()
        optimizer.step()
    save_model(model.eval(), str(here / "vit.safetensors"))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(here))
    trained_vit()
