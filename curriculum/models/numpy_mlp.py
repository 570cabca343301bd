"""The simple network built from scratch in NumPy: forward pass, manual backprop, Adam.

The same network as ``torch_mlp`` and ``keras_mlp``::

    logits = relu(x @ W1 + b1) @ W2 + b2        probability = sigmoid(logits)

Parameters are a plain dict of float64 arrays -- ``W1`` (inputs x hidden), ``b1`` (hidden),
``W2`` (hidden x outputs), ``b2`` (outputs) -- and every function here is pure: it returns new
arrays and never changes its arguments. The loss is binary cross-entropy on the logits (what
``torch.nn.BCEWithLogitsLoss`` computes, ``pos_weight`` included), and Adam is written out the
way ``torch.optim.Adam`` computes it, so both produce the same loss curve from the same weights.
Nothing here imports a deep-learning framework: ``score_raw_rows`` serves an exported ``.npz``
with NumPy alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from curriculum.io import load_npz

Params = dict[str, np.ndarray]
PARAM_NAMES = ("W1", "b1", "W2", "b2")


# --------------------------------------------------------------------------- initialisation


def glorot_uniform(fan_in: int, fan_out: int, rng: Any) -> np.ndarray:
    """Glorot (Xavier) uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), Keras' default."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float64)


def init_params(n_inputs: int, n_hidden: int, n_outputs: int, rng: Any) -> Params:
    """Glorot-uniform weights and zero biases, as ``torch_init.glorot_init_`` and Keras do.

    ``rng`` is anything with NumPy's ``uniform(low, high, size)``: a ``np.random.Generator``,
    a ``RandomState`` or the ``np.random`` module (its global state).
    """
    return {
        "W1": glorot_uniform(n_inputs, n_hidden, rng),
        "b1": np.zeros(n_hidden),
        "W2": glorot_uniform(n_hidden, n_outputs, rng),
        "b2": np.zeros(n_outputs),
    }


def build_mlp(spec: Mapping[str, Any], train: Any) -> Params:
    """The builder the pipeline calls: ``spec["input_shape"]`` is ``(features,)``.

    Draws from NumPy's global generator, which the back end's ``seed_everything`` seeds with the
    project's seed -- the same scheme as torch's and Keras' global generators.
    """
    (n_inputs,) = spec["input_shape"]
    return init_params(n_inputs, train.hidden_units, spec["n_outputs"], np.random)


# --------------------------------------------------------------------------- forward pass


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def forward(params: Params, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Logits (rows x outputs) and what backprop needs: the input, pre-activations and hidden layer."""
    z1 = x @ params["W1"] + params["b1"]
    h = np.maximum(z1, 0.0)
    logits = h @ params["W2"] + params["b2"]
    return logits, (x, z1, h)


def predict_proba(params: Params, x: np.ndarray) -> np.ndarray:
    """Probabilities of the positive class, shape (rows, 1)."""
    logits, _ = forward(params, np.asarray(x, dtype=np.float64))
    return sigmoid(logits)


# --------------------------------------------------------------------------- loss and gradients


def bce_with_logits(logits: np.ndarray, y: np.ndarray, pos_weight: float | None = None) -> float:
    """Mean binary cross-entropy on logits: pos_weight * y * softplus(-z) + (1 - y) * softplus(z).

    softplus(z) = log(1 + exp(z)) = -log(1 - sigmoid(z)), computed stably with ``logaddexp``.
    ``pos_weight`` scales the positive examples' term (``BCEWithLogitsLoss(pos_weight=...)``).
    """
    pw = 1.0 if pos_weight is None else float(pos_weight)
    y = y.reshape(logits.shape)
    per_example = pw * y * np.logaddexp(0.0, -logits) + (1.0 - y) * np.logaddexp(0.0, logits)
    return float(per_example.mean())


def l2_penalty(params: Params, l2: float) -> float:
    """l2 * sum(w^2) over the weight matrices (not the biases), as Keras' kernel_regularizer."""
    return float(l2 * sum(np.sum(params[name] ** 2) for name in ("W1", "W2"))) if l2 else 0.0


class BinaryCrossEntropy:
    """The objective of a binary task: BCE on the logits (``pos_weight`` as in torch), its gradient,
    accuracy and the sigmoid head. The task hands it to the back end; the network stays generic."""

    output_names = ("proba",)
    onnx_head = "Sigmoid"

    def __init__(self, pos_weight: float | None = None):
        self.pos_weight = pos_weight

    def loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        return bce_with_logits(logits, y, self.pos_weight)

    def grad(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        """d(mean loss)/dz = ((1 - y) * sigmoid(z) - pw * y * (1 - sigmoid(z))) / n (sigmoid(z) - y over n when pw = 1)."""
        y = y.reshape(logits.shape).astype(np.float64)
        pw = 1.0 if self.pos_weight is None else float(self.pos_weight)
        p = sigmoid(logits)
        return ((1.0 - y) * p - pw * y * (1.0 - p)) / len(logits)

    def metric(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        """1.0 where the predicted class is right."""
        return ((logits > 0) == (y.reshape(logits.shape) > 0.5)).astype(np.float64)

    def outputs(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        return {"proba": sigmoid(logits)}


def loss_and_grads(
    params: Params, x: np.ndarray, y: np.ndarray, objective: BinaryCrossEntropy, l2: float = 0.0
) -> tuple[float, Params, np.ndarray]:
    """The training loss, its gradient for every parameter (manual backprop) and the logits.

    From the objective's gradient on the logits, back through the second linear layer, the ReLU
    (gradient 1 where its input is > 0, else 0) and the first linear layer.
    """
    logits, (x, z1, h) = forward(params, x)
    d_logits = objective.grad(logits, y)
    grads = {
        "W2": h.T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }
    d_z1 = (d_logits @ params["W2"].T) * (z1 > 0)
    grads["W1"] = x.T @ d_z1
    grads["b1"] = d_z1.sum(axis=0)
    if l2:
        grads["W1"] = grads["W1"] + 2.0 * l2 * params["W1"]
        grads["W2"] = grads["W2"] + 2.0 * l2 * params["W2"]
    loss = objective.loss(logits, y) + l2_penalty(params, l2)
    return loss, grads, logits


# --------------------------------------------------------------------------- Adam


def adam_init(params: Params) -> dict[str, Any]:
    """Adam's state: the step count and the first/second moment estimates, all zero."""
    return {
        "t": 0,
        "m": {name: np.zeros_like(value) for name, value in params.items()},
        "v": {name: np.zeros_like(value) for name, value in params.items()},
    }


def adam_step(
    params: Params,
    grads: Params,
    state: Mapping[str, Any],
    learning_rate: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[Params, dict[str, Any]]:
    """One Adam update, in the order ``torch.optim.Adam`` computes it (its defaults too):

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    w <- w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    t = state["t"] + 1
    bias_correction1 = 1.0 - beta1 ** t
    bias_correction2_sqrt = np.sqrt(1.0 - beta2 ** t)
    step_size = learning_rate / bias_correction1
    new_params, m, v = {}, {}, {}
    for name, value in params.items():
        g = grads[name]
        m[name] = beta1 * state["m"][name] + (1.0 - beta1) * g
        v[name] = beta2 * state["v"][name] + (1.0 - beta2) * g * g
        denom = np.sqrt(v[name]) / bias_correction2_sqrt + eps
        new_params[name] = value - step_size * m[name] / denom
    return new_params, {"t": t, "m": m, "v": v}


def train_step(
    params: Params,
    state: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    learning_rate: float,
    objective: BinaryCrossEntropy,
    l2: float = 0.0,
) -> tuple[Params, dict[str, Any], float, np.ndarray]:
    """Loss and gradients at the current weights, then one Adam step: (params, state, loss, logits)."""
    loss, grads, logits = loss_and_grads(params, x, y, objective, l2)
    params, state = adam_step(params, grads, state, learning_rate)
    return params, state, loss, logits


# --------------------------------------------------------------------------- serving


def score_raw_rows(npz_path: str | Path, rows: np.ndarray) -> np.ndarray:
    """Positive-class probabilities for raw (unstandardised) feature rows, from an exported ``.npz``.

    The file holds the weights and, when the pipeline standardised the inputs, the
    ``input_mean``/``input_scale`` fitted on the training split; NumPy alone does the rest.
    """
    bundle = {name: value.astype(np.float64) for name, value in load_npz(npz_path).items()}
    x = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    if "input_mean" in bundle:
        x = (x - bundle["input_mean"]) / bundle["input_scale"]
    return predict_proba({name: bundle[name] for name in PARAM_NAMES}, x).reshape(-1)
