"""The project's models: builders ``(spec, train[, weights])`` and stems ``(data, config)``.

``mobilenet_v2_head`` (feature extraction) takes the 1280 pooled features of the whole frozen
backbone; ``mobilenet_v2_top`` (fine-tuning) takes the activations before block
``spec["cut"]`` and trains blocks ``cut..18`` from the ImageNet weights. Both inputs are the
outputs of stems that preprocess ran once (:data:`STEMS`), and both heads start from the same
seeded weights in the two frameworks. The curriculum's CNN from scratch is the baseline model.
"""
from __future__ import annotations

from typing import Any, Mapping

from curriculum.backbones import transfer
from curriculum.layout import ProcessedData

TORCH_WEIGHTS, KERAS_WEIGHTS = "mobilenet_v2_torch", "mobilenet_v2_keras"  # preprocess's fitted artifacts
FEATURES, TRUNK = "features", "trunk"  # the split arrays holding the stems' outputs


def torch_head(spec: Mapping[str, Any], train: Any):
    return transfer.torch_top(None, transfer.FROZEN, spec["n_outputs"], train.dropout, spec["seed"])


def keras_head(spec: Mapping[str, Any], train: Any):
    return transfer.keras_top(None, transfer.FROZEN, tuple(spec["input_shape"]), spec["n_outputs"],
                              train.dropout, spec["seed"])


def torch_top(spec: Mapping[str, Any], train: Any, state_dict: Mapping[str, Any]):
    return transfer.torch_top(state_dict, spec["cut"], spec["n_outputs"], train.dropout, spec["seed"])


def keras_top(spec: Mapping[str, Any], train: Any, ported: Mapping[str, Any]):
    return transfer.keras_top(ported, spec["cut"], tuple(spec["input_shape"]), spec["n_outputs"],
                              train.dropout, spec["seed"])


def _stem_args(data: ProcessedData, cut: int) -> dict[str, Any]:
    return {"image_size": data.info["model_spec"]["image_size"], "cut": cut,
            "input_shape": tuple(data.split("test")["x"].shape[1:])}


def torch_features_stem(data: ProcessedData, config: Any):
    return transfer.torch_stem(data.fitted[TORCH_WEIGHTS], **_stem_args(data, transfer.FROZEN))


def keras_features_stem(data: ProcessedData, config: Any):
    return transfer.keras_stem(data.fitted[KERAS_WEIGHTS], **_stem_args(data, transfer.FROZEN))


def torch_trunk_stem(data: ProcessedData, config: Any):
    return transfer.torch_stem(data.fitted[TORCH_WEIGHTS], **_stem_args(data, data.info["model_spec"]["cut"]))


def keras_trunk_stem(data: ProcessedData, config: Any):
    return transfer.keras_stem(data.fitted[KERAS_WEIGHTS], **_stem_args(data, data.info["model_spec"]["cut"]))
