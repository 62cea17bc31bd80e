"""Hugging Face models as they are, from tiny configs (nothing is downloaded):
a ViT image classifier, a BERT encoder and a GPT-2 language model. gradcli
takes them with no wrapper: --select picks a field of their ModelOutput,
--arg passes labels and masks by name, --weights loads trained weights,
--wrt act:MODULE differentiates w.r.t. a submodule's output (token saliency).

    gradcli jacobian sample_inputs/hf_models.py:vit -x sample_inputs/pixels.npy --select logits \
        --weights sample_inputs/vit.safetensors
    gradcli vjp sample_inputs/hf_models.py:bert -x sample_inputs/tokens.json --select pooler_output \
        --wrt act:embeddings.word_embeddings
"""

import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification


def vit():
    """A ViT classifying 3x16x16 images into 3 classes: 2 layers, hidden size 32, 8x8 patches."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                       image_size=16, patch_size=8, num_labels=3)
    return ViTForImageClassification(config).eval()


def bert():
    """A BERT encoder over a vocabulary of 50 tokens."""
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=16)).eval()


def gpt2():
    """A GPT-2 language model over a vocabulary of 50 tokens (its loss: model(input_ids=x, labels=x).loss)."""
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16,
                                      bos_token_id=0, eos_token_id=0)).eval()
