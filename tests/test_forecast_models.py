"""The forecasting models (LSTM, GRU, LSTM + attention) in Keras 3 and PyTorch: the same
architecture in both (equal parameter counts, and equal forecasts once the Keras weights are
copied into the torch model), output shapes, Keras-style initialisation, deterministic training
that can overfit a tiny set, and ONNX round trips with a dynamic batch axis.

Both frameworks load in this one process: ``conftest.py`` imports triton before TensorFlow.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from types import SimpleNamespace

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import torch

from curriculum.frameworks import torch_backend
from curriculum.models import keras_forecast, torch_forecast

SPEC = {"lookback": 6, "n_features": 3, "horizon": 4}
BUILDERS = ("build_lstm", "build_gru", "build_attention")


def _train(**overrides) -> SimpleNamespace:
    return SimpleNamespace(**{"units": 8, "layers": 1, "dropout": 0.0, "heads": 2, **overrides})


def _windows(n: int, spec=SPEC, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, spec["lookback"], spec["n_features"])).astype(np.float32)


def _torch_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def deterministic_torch():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


# --------------------------------------------------------------------------- same architecture


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("builder", BUILDERS)
def test_parameter_counts_are_equal_in_both_frameworks(builder, layers):
    train = _train(layers=layers)
    keras_count = getattr(keras_forecast, builder)(SPEC, train).count_params()
    assert keras_count == _torch_count(getattr(torch_forecast, builder)(SPEC, train))
    f, u, h = SPEC["n_features"], train.units, SPEC["horizon"]
    lstm = [4 * (n_in * u + u * u + u) for n_in in [f] + [u] * (layers - 1)]  # Keras' LSTM: one bias
    gru = [3 * (n_in * u + u * u + 2 * u) for n_in in [f] + [u] * (layers - 1)]  # reset_after: two biases
    expected = {
        "build_lstm": sum(lstm) + u * h + h,
        "build_gru": sum(gru) + u * h + h,
        "build_attention": sum(lstm) + 4 * (u * u + u) + 2 * u * h + h,
    }[builder]
    assert keras_count == expected


def _copy_keras_weights_into_torch(keras_model: keras.Model, torch_model: torch.nn.Module) -> None:
    """Layer for layer: recurrent stacks in order, the attention, the output layer."""

    def put(param: torch.Tensor, value: np.ndarray) -> None:
        assert param.shape == value.shape, (param.shape, value.shape)
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    recurrent_k = [layer for layer in keras_model.layers if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU))]
    recurrent_t = [m for m in torch_model.modules() if isinstance(m, (torch_forecast.KerasLSTM, torch_forecast.KerasGRU))]
    assert len(recurrent_k) == len(recurrent_t) > 0
    with torch.no_grad():
        for k_layer, t_layer in zip(recurrent_k, recurrent_t):
            kernel, recurrent, bias = k_layer.get_weights()
            if isinstance(t_layer, torch_forecast.KerasLSTM):  # gates i, f, c, o in both
                put(t_layer.input_kernel.weight, kernel.T)
                put(t_layer.input_kernel.bias, bias)
                put(t_layer.recurrent_kernel.weight, recurrent.T)
            else:  # Keras' gates z, r, h; torch's r, z, n
                u = recurrent.shape[0]
                order = np.r_[u : 2 * u, 0:u, 2 * u : 3 * u]
                put(t_layer.gru.weight_ih_l0, kernel[:, order].T)
                put(t_layer.gru.weight_hh_l0, recurrent[:, order].T)
                put(t_layer.gru.bias_ih_l0, bias[0, order])
                put(t_layer.gru.bias_hh_l0, bias[1, order])
        attention = [layer for layer in keras_model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
        if attention:
            qk, qb, kk, kb, vk, vb, ok, ob = attention[0].get_weights()
            units = qk.shape[0]
            put(torch_model.attention.in_proj_weight, np.concatenate([w.reshape(units, -1).T for w in (qk, kk, vk)]))
            put(torch_model.attention.in_proj_bias, np.concatenate([b.reshape(-1) for b in (qb, kb, vb)]))
            put(torch_model.attention.out_proj.weight, ok.reshape(-1, units).T)
            put(torch_model.attention.out_proj.bias, ob)
        (dense,) = [layer for layer in keras_model.layers if isinstance(layer, keras.layers.Dense)]
        put(torch_model.head.weight, dense.get_weights()[0].T)
        put(torch_model.head.bias, dense.get_weights()[1])


@pytest.mark.parametrize("builder", BUILDERS)
def test_keras_weights_in_the_torch_model_give_the_same_forecast(builder):
    """The strongest check that the two are one architecture: same weights, same outputs."""
    train = _train(layers=2, dropout=0.3)
    keras.utils.set_random_seed(1)
    keras_model = getattr(keras_forecast, builder)(SPEC, train)
    torch_model = getattr(torch_forecast, builder)(SPEC, train).eval()
    _copy_keras_weights_into_torch(keras_model, torch_model)
    x = _windows(7) * 2
    with torch.no_grad():
        torch_out = torch_model(torch.from_numpy(x)).numpy()
    keras_out = keras.ops.convert_to_numpy(keras_model(x, training=False))
    np.testing.assert_allclose(torch_out, keras_out, atol=1e-5)
    assert np.abs(keras_out).max() > 1e-2  # not a trivially zero forecast


# --------------------------------------------------------------------------- shapes, init, config


@pytest.mark.parametrize("horizon", [1, 7])
@pytest.mark.parametrize("builder", BUILDERS)
def test_every_model_maps_a_window_batch_to_one_forecast_per_horizon_step(builder, horizon):
    spec = {**SPEC, "horizon": horizon}
    x = _windows(5, spec)
    keras_model = getattr(keras_forecast, builder)(spec, _train())
    keras_out = keras.ops.convert_to_numpy(keras_model(x, training=False))
    with torch.no_grad():
        torch_out = getattr(torch_forecast, builder)(spec, _train()).eval()(torch.from_numpy(x))
    assert keras_out.shape == tuple(torch_out.shape) == (5, horizon)
    assert keras_out.dtype == np.float32 and torch_out.dtype == torch.float32
    assert keras_model.name == builder.removeprefix("build_") + "_forecaster"


def test_torch_initialisation_follows_keras_defaults():
    torch.manual_seed(0)
    units = 16
    model = torch_forecast.build_attention({**SPEC, "n_features": 5}, _train(units=units, heads=4))
    lstm = model.encoder[0]
    bias = lstm.input_kernel.bias.detach()
    assert torch.equal(bias[units : 2 * units], torch.ones(units))  # forget gate
    assert torch.count_nonzero(bias[:units]) == torch.count_nonzero(bias[2 * units :]) == 0
    recurrent = lstm.recurrent_kernel.weight.detach()  # (4u, u): orthonormal columns, as Keras' (u, 4u) rows
    torch.testing.assert_close(recurrent.T @ recurrent, torch.eye(units), atol=1e-5, rtol=0)
    glorot_limit = (6 / (5 + 4 * units)) ** 0.5
    assert lstm.input_kernel.weight.abs().max() <= glorot_limit
    assert torch.count_nonzero(model.attention.in_proj_bias) == torch.count_nonzero(model.head.bias) == 0
    gru = torch_forecast.build_gru(SPEC, _train()).recurrent[0].gru
    assert torch.count_nonzero(gru.bias_ih_l0) == torch.count_nonzero(gru.bias_hh_l0) == 0


def test_attention_heads_must_divide_units():
    with pytest.raises(ValueError, match="heads"):
        keras_forecast.build_attention(SPEC, _train(units=8, heads=3))
    with pytest.raises(ValueError, match="heads"):
        torch_forecast.build_attention(SPEC, _train(units=8, heads=3))


# --------------------------------------------------------------------------- training


def _tiny_task() -> tuple[np.ndarray, np.ndarray]:
    """32 windows whose targets depend on the last step and on the window mean: learnable."""
    x = _windows(32, seed=3)
    steps = np.arange(1, SPEC["horizon"] + 1, dtype=np.float32) / SPEC["horizon"]
    y = x[:, -1, :1] * steps + x[:, :, 1:2].mean(axis=1) * (1 - steps)
    return x, y.astype(np.float32)


def _train_torch(builder: str, seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    x, y = map(torch.from_numpy, _tiny_task())
    torch.manual_seed(seed)
    model = getattr(torch_forecast, builder)(SPEC, _train(dropout=0.1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model.state_dict()


@pytest.mark.parametrize("builder", ["build_lstm", "build_attention"])
def test_torch_training_is_deterministic_and_overfits_a_tiny_set(builder, deterministic_torch):
    losses, weights = _train_torch(builder, seed=0)
    again, weights_again = _train_torch(builder, seed=0)
    assert losses == again
    assert all(torch.equal(weights[name], weights_again[name]) for name in weights)
    assert losses[-1] < 0.1 * losses[0]


def _train_keras(builder: str, seed: int) -> tuple[float, float, list[np.ndarray]]:
    """150 full-batch Adam steps (one epoch over the set repeated, which spares Keras' per-epoch
    overhead); returns the loss before and after and the weights."""
    x, y = _tiny_task()
    keras.utils.set_random_seed(seed)
    model = getattr(keras_forecast, builder)(SPEC, _train(dropout=0.1))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    before = model.evaluate(x, y, batch_size=32, verbose=0)
    model.fit(np.tile(x, (150, 1, 1)), np.tile(y, (150, 1)), batch_size=32, epochs=1, shuffle=False, verbose=0)
    return before, model.evaluate(x, y, batch_size=32, verbose=0), model.get_weights()


def test_keras_training_is_deterministic_and_overfits_a_tiny_set():
    tf.config.experimental.enable_op_determinism()  # as the Keras back end's seed_everything does
    before, after, weights = _train_keras("build_gru", seed=0)
    _, after_again, weights_again = _train_keras("build_gru", seed=0)
    assert after == after_again
    assert all(np.array_equal(a, b) for a, b in zip(weights, weights_again))
    assert after < 0.1 * before


# --------------------------------------------------------------------------- ONNX


def _onnx_outputs(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    return session.run(None, {model_input.name: x})[0]


def test_torch_attention_model_round_trips_through_onnx_with_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = torch_forecast.build_attention(SPEC, _train(layers=2)).eval()
    exported = torch_backend.PredictionModel(model, torch.nn.Identity(), ("forecast",)).eval()
    path = torch_backend.export(exported, tmp_path, _windows(3))["onnx"]  # the back end's own exporter
    for batch in (1, 9):
        x = _windows(batch, seed=batch)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_onnx_outputs(path, x), expected, atol=1e-5)


def test_keras_gru_model_round_trips_through_onnx_with_a_dynamic_batch(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_forecast.build_gru(SPEC, _train(layers=2))
    model(_windows(2), training=False)  # Keras exports only a model that has been called
    path = tmp_path / "gru.onnx"
    model.export(path, format="onnx", verbose=False)
    for batch in (1, 9):
        x = _windows(batch, seed=batch)
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(_onnx_outputs(path, x), expected, atol=1e-5)
