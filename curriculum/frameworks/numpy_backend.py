"""NumPy from scratch: the back-end interface around ``curriculum.models.numpy_mlp``.

Same contract as the Keras and torch back ends (``seed_everything``, ``fit``, ``load``,
``predict``, ``export``), the same DVCLive metric names, the same best-by-validation-loss
checkpoint, early stopping and reduce-LR-on-plateau semantics as the torch loop. The model is
the dict of float64 arrays ``numpy_mlp`` works on; it is saved as ``.npz`` (no pickle). Export
writes the weights with the standardiser as ``model.npz`` (served by ``numpy_mlp.score_raw_rows``)
and the same network as an ONNX graph written node by node, so the pipeline's parity check
covers this variant too. The loss comes from the task (``Task.numpy_objective``): tasks that
have none (multiclass, regression) cannot use this back end.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from curriculum.frameworks.checkpoints import Checkpoints, decode_value, encode_value
from curriculum.frameworks.epochs import EpochEnd
from curriculum.io import load_npz, save_npz
from curriculum.layout import ProcessedData
from curriculum.models import numpy_mlp
from curriculum.tasks.base import Predictions, Task

if TYPE_CHECKING:
    from dvclive import Live  # only train logs, and imports it itself

MODEL_FILE = "model.npz"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # what opset 17 needs; readable by every onnxruntime since 1.11


def set_threads(threads: int | None) -> None:
    """Cap the BLAS threads NumPy's matrix products use."""
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)


def seed_everything(seed: int) -> None:
    """Seed Python's and NumPy's global generators (the builder draws its initial weights from NumPy's)."""
    random.seed(seed)
    np.random.seed(seed)


class _ReduceLROnPlateau:
    """torch's ReduceLROnPlateau (mode min, relative threshold 1e-4, no cooldown), for parity with the torch loop."""

    def __init__(self, factor: float, patience: int, min_lr: float, threshold: float = 1e-4):
        self.factor, self.patience, self.min_lr, self.threshold = factor, patience, min_lr, threshold
        self.best, self.bad_epochs = float("inf"), 0

    def step(self, val_loss: float, learning_rate: float) -> float:
        if val_loss < self.best * (1.0 - self.threshold):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.bad_epochs = 0
            return max(learning_rate * self.factor, self.min_lr)
        return learning_rate

    def state(self) -> dict[str, Any]:
        return {"best": encode_value(self.best), "bad_epochs": self.bad_epochs}

    def restore(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = decode_value(state["best"]), state["bad_epochs"]


@dataclass(frozen=True)
class Loaded:
    """The network's weights and the objective (from the task) that turns logits into predictions."""

    params: numpy_mlp.Params
    objective: Any


STATE_FILE = "state.npz"


def fit(
    model: numpy_mlp.Params, data: ProcessedData, task: Task, train: Any, seed: int, model_dir: Path, live: Live,
    checkpoints: Checkpoints | None = None,
) -> Loaded:
    """Adam on the from-scratch network, minimising the task's NumPy objective; (mini-)batches
    shuffled with ``seed``; full batch when ``batch_size`` is null. Writes the weights of the best
    validation-loss epoch to ``model_dir`` when training ends and returns them. With
    ``checkpoints``, every epoch ends with a checkpoint of the whole state (weights, Adam moments,
    learning rate and plateau counters, early-stopping counters, best weights, the shuffling
    generator), and a killed run's checkpoint is continued from its next epoch, exactly."""
    objective = task.numpy_objective(train)
    params = {name: np.asarray(model[name], dtype=np.float64) for name in numpy_mlp.PARAM_NAMES}
    train_split, val_split = data.split("train"), data.split("val")
    x_train = np.asarray(task.inputs(train_split), dtype=np.float64)
    y_train = np.asarray(task.targets(train_split), dtype=np.float64).reshape(-1, 1)
    x_val = np.asarray(task.inputs(val_split), dtype=np.float64)
    y_val = np.asarray(task.targets(val_split), dtype=np.float64).reshape(-1, 1)
    learning_rate = train.learning_rate
    batch_size = train.batch_size or len(x_train)
    reduce_lr = train.reduce_lr
    scheduler = _ReduceLROnPlateau(reduce_lr.factor, reduce_lr.patience, reduce_lr.min_lr) if reduce_lr else None
    rng = np.random.default_rng(seed)
    state = numpy_mlp.adam_init(params)
    best: dict[str, numpy_mlp.Params] = {}

    def keep_best() -> None:
        best["params"] = {name: value.copy() for name, value in params.items()}

    end_epoch = EpochEnd(live, train, task, save_checkpoint=keep_best)

    first_epoch, stopped = 1, False
    resumed = checkpoints.resumed if checkpoints is not None else None
    if resumed is not None:
        saved = load_npz(resumed.files / STATE_FILE)
        params = {name: saved[f"params/{name}"] for name in numpy_mlp.PARAM_NAMES}
        state = {"t": resumed.state["adam_t"],
                 "m": {name: saved[f"m/{name}"] for name in numpy_mlp.PARAM_NAMES},
                 "v": {name: saved[f"v/{name}"] for name in numpy_mlp.PARAM_NAMES}}
        if f"best/{numpy_mlp.PARAM_NAMES[0]}" in saved:
            best["params"] = {name: saved[f"best/{name}"] for name in numpy_mlp.PARAM_NAMES}
        learning_rate = decode_value(resumed.state["learning_rate"])
        if scheduler is not None:
            scheduler.restore(resumed.state["scheduler"])
        rng.bit_generator.state = resumed.state["shuffle"]
        end_epoch.restore(resumed.state["epoch_end"])
        checkpoints.resume_global_rngs()
        first_epoch, stopped = resumed.epoch + 1, resumed.stopped

    def write_state(folder: Path) -> None:
        arrays = {f"params/{name}": value for name, value in params.items()}
        arrays.update({f"m/{name}": value for name, value in state["m"].items()})
        arrays.update({f"v/{name}": value for name, value in state["v"].items()})
        arrays.update({f"best/{name}": value for name, value in best.get("params", {}).items()})
        np.savez(folder / STATE_FILE, **arrays)  # uncompressed: written every epoch

    for epoch in range(first_epoch, 1 if stopped else train.epochs + 1):
        order = rng.permutation(len(x_train))
        total_loss, total_metric = 0.0, 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            params, state, loss, logits = numpy_mlp.train_step(
                params, state, x_train[batch], y_train[batch], learning_rate, objective, train.l2)
            total_loss += loss * len(batch)
            total_metric += float(objective.metric(logits, y_train[batch]).sum())
        val_logits, _ = numpy_mlp.forward(params, x_val)
        val_loss = objective.loss(val_logits, y_val)
        val_metric = float(objective.metric(val_logits, y_val).mean())
        stop = end_epoch(epoch, total_loss / len(x_train), total_metric / len(x_train), val_loss, val_metric,
                         learning_rate)
        if not stop and scheduler is not None:
            learning_rate = scheduler.step(end_epoch.score(val_loss, val_metric), learning_rate)
        if checkpoints is not None:
            checkpoints.save(epoch, stop, {
                "adam_t": state["t"], "learning_rate": encode_value(learning_rate),
                "scheduler": scheduler.state() if scheduler is not None else None,
                "shuffle": rng.bit_generator.state, "epoch_end": end_epoch.state(),
            }, write_state)
        if stop:
            break
    if "params" not in best:
        raise RuntimeError("no epoch had a finite validation loss: there are no best weights to keep")
    model_dir.mkdir(parents=True, exist_ok=True)
    save_npz(model_dir / MODEL_FILE, **best["params"])
    return load(model_dir, build=None, task=task, train=train)


def load(model_dir: Path, build: Callable[[], numpy_mlp.Params] | None, task: Task, train: Any = None,
         head: Any = None) -> Loaded:
    """The best checkpoint's weights as float64 arrays; checked against the architecture when ``build`` is given.
    The from-scratch MLP's head is the task's (``head`` must be None)."""
    if head is not None:
        raise ValueError("the NumPy back end has no project heads: its MLP ends in the task's own head")
    saved = load_npz(model_dir / MODEL_FILE)
    params = {name: saved[name].astype(np.float64) for name in numpy_mlp.PARAM_NAMES}
    if build is not None:
        expected = {name: value.shape for name, value in build().items()}
        actual = {name: value.shape for name, value in params.items()}
        if expected != actual:
            raise ValueError(f"{model_dir / MODEL_FILE}: weights have shapes {actual}, the model needs {expected}")
    return Loaded(params, task.numpy_objective(train))


def predict(loaded: Loaded, x: np.ndarray) -> Predictions:
    logits, _ = numpy_mlp.forward(loaded.params, np.asarray(x, dtype=np.float64))
    return loaded.objective.outputs(logits)


def to_onnx(loaded: Loaded, input_scaler: Mapping[str, np.ndarray] | None = None):
    """The network as an ONNX graph on float32 rows with a dynamic batch axis:
    [Sub(mean), Div(scale)] -> Gemm(W1, b1) -> Relu -> Gemm(W2, b2) -> the objective's head (Sigmoid)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    params, (output_name,) = loaded.params, loaded.objective.output_names
    n_inputs, n_outputs = params["W1"].shape[0], params["W2"].shape[1]
    initializers = [constant(name, params[name]) for name in numpy_mlp.PARAM_NAMES]
    nodes, current = [], "x"
    if input_scaler is not None:
        initializers += [constant("input_mean", input_scaler["mean"]), constant("input_scale", input_scaler["scale"])]
        nodes += [helper.make_node("Sub", ["x", "input_mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "input_scale"], ["standardised"])]
        current = "standardised"
    nodes += [
        helper.make_node("Gemm", [current, "W1", "b1"], ["hidden_linear"]),
        helper.make_node("Relu", ["hidden_linear"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "W2", "b2"], ["logits"]),
        helper.make_node(loaded.objective.onnx_head, ["logits"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "simple_nn_numpy",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_inputs])],
        outputs=[helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_outputs])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="dl-curriculum numpy_backend", ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def export(
    loaded: Loaded,
    export_dir: Path,
    sample: np.ndarray,
    input_scaler: Mapping[str, np.ndarray] | None = None,
    output_scaler: Mapping[str, np.ndarray] | None = None,
    stem: Any = None,
) -> dict[str, Path]:
    """Write ``model.npz`` (float64 weights, plus ``input_mean``/``input_scale`` when given) and
    ``model.onnx``; with an input scaler both take raw feature rows. No frozen stem: the
    from-scratch back end has no pretrained network to put in front."""
    if stem is not None:
        raise ValueError("the NumPy back end cannot export a model with a frozen stem in front")
    import onnx

    if output_scaler is not None:
        raise ValueError("the NumPy network predicts class probabilities; it has no output scaler to fold in")
    export_dir.mkdir(parents=True, exist_ok=True)
    native, onnx_path = export_dir / MODEL_FILE, export_dir / "model.onnx"
    bundle = dict(loaded.params)
    if input_scaler is not None:
        bundle.update(input_mean=np.asarray(input_scaler["mean"]), input_scale=np.asarray(input_scaler["scale"]))
    if sample.shape[1:] != loaded.params["W1"].shape[:1]:
        raise ValueError(f"the network takes {loaded.params['W1'].shape[0]} features, "
                         f"the sample rows have shape {sample.shape[1:]}")
    save_npz(native, **bundle)
    onnx.save(to_onnx(loaded, input_scaler), onnx_path)
    return {"native": native, "onnx": onnx_path}
