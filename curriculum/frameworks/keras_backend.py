"""Keras 3 (TensorFlow back end): compile, fit with the curriculum's callbacks (resumable), export."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from curriculum.frameworks.quiet import import_tensorflow

tf = import_tensorflow()
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402  (after TensorFlow's quiet import)

from curriculum.frameworks.checkpoints import Checkpoint, Checkpoints, canonical_zip, decode_value, encode_value
from curriculum.frameworks.epochs import monitored
from curriculum.io import atomic_path, load_npz
from curriculum.layout import ProcessedData
from curriculum.onnx_canonical import canonical_names
from curriculum.tasks.base import Predictions, Task

if TYPE_CHECKING:
    from dvclive import Live

MODEL_FILE = "model.keras"


def set_threads(threads: int | None) -> None:
    """Cap TensorFlow's intra- and inter-op thread pools (before any op runs)."""
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic, so reruns match."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class _PrintEvery(keras.callbacks.Callback):
    """One line of the epoch's logs every ``every`` epochs (instead of Keras' per-epoch progress bar)."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            values = " ".join(f"{name} {float(value):.4g}" for name, value in (logs or {}).items())
            print(f"epoch {epoch + 1}: {values}", flush=True)


class _Resumable:
    """Mixin for a Keras callback whose counters survive a restart: ``on_train_begin`` resets them
    as usual, then puts back the ones a checkpoint held. ``STATE`` names them."""

    STATE: tuple[str, ...] = ()

    def __init__(self, *args: Any, restored: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.restored = restored

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        super().on_train_begin(logs)
        for name, value in (self.restored or {}).items():
            setattr(self, name, decode_value(value))

    def state(self) -> dict[str, Any]:
        return {name: encode_value(getattr(self, name)) for name in self.STATE}


class _ModelCheckpoint(_Resumable, keras.callbacks.ModelCheckpoint):
    STATE = ("best",)


class _EarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    STATE = ("wait", "stopped_epoch", "best", "best_epoch")


class _ReduceLROnPlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    STATE = ("wait", "cooldown_counter", "best")


VARIABLES_FILE = "variables.npz"
BEST_FILE = "best.keras"


def _variables(model: keras.Model) -> list:
    """Everything training changes: the model's variables (weights and the dropout layers'
    SeedGenerator states) and the optimizer's (step count, learning rate, moments)."""
    return [*model.variables, *model.optimizer.variables]


class _Checkpoint(keras.callbacks.Callback):
    """Last in the callback list: after every epoch, commit the whole training state (variables,
    the other callbacks' counters, the best model so far) as a checkpoint; on a resumed run, put
    the global RNGs back right before the first epoch."""

    def __init__(self, checkpoints: Checkpoints, resumable: list[_Resumable], best_path: Path):
        super().__init__()
        self.checkpoints = checkpoints
        self.resumable = resumable
        self.best_path = best_path

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self.checkpoints.resume_global_rngs()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        variables = _variables(self.model)

        def write(folder: Path) -> None:
            np.savez(folder / VARIABLES_FILE, **{f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
            if self.best_path.exists():
                shutil.copyfile(self.best_path, folder / BEST_FILE)

        self.checkpoints.save(epoch + 1, bool(self.model.stop_training), {
            "callbacks": [callback.state() for callback in self.resumable],
            "variables": [v.path for v in variables],
        }, write)


def _restore(model: keras.Model, checkpoint: Checkpoint) -> None:
    model.optimizer.build(model.trainable_variables)
    variables = _variables(model)
    paths = [v.path for v in variables]
    if paths != checkpoint.state["variables"]:
        raise ValueError(f"{checkpoint.files}: the checkpoint's variables do not match the model's")
    saved = load_npz(checkpoint.files / VARIABLES_FILE)
    for index, variable in enumerate(variables):
        variable.assign(saved[f"{index:04d}"])


class _EpochBatches(keras.utils.PyDataset):
    """The task's own training inputs of each epoch (:meth:`Task.epoch_batches`: fresh
    augmentation) as Keras batches: epoch ``e``'s inputs in the task's order, cut into batches of
    ``batch_size`` (the last one smaller), targets and sample weights indexed the same way: the
    very batches the torch loop trains on. ``fit`` must not shuffle it.

    Which epoch is served is set by :attr:`callback`, from the epoch number Keras' ``fit`` loop
    passes its callbacks (counted from ``initial_epoch``, so a resumed run gets its own epochs):
    the loop calls ``on_epoch_begin(epoch)`` before it makes that epoch's data iterator.
    PyDataset's own ``on_epoch_begin()`` gets no epoch number, and the TF trainer calls these
    hooks outside epochs too (``on_epoch_end`` once before the first epoch; ``on_epoch_begin``
    when it builds the model under a distribution strategy), so counting them would drift.
    Before the first epoch (Keras reads two batches for the tensor spec) it serves ``first_epoch``.
    """

    def __init__(self, task: Task, split: Any, train: Any, seed: int, targets: np.ndarray,
                 weights: np.ndarray | None, first_epoch: int, first: tuple[np.ndarray, ...]):
        super().__init__()  # one worker, no multiprocessing: batches come in order, from this process
        self.task, self.split, self.train, self.seed = task, split, train, seed
        self.targets, self.weights = targets, weights
        self.batch_size = train.batch_size or len(targets)
        self.served = self._epoch(first_epoch, first)  # swapped whole: a batch never mixes two epochs
        self.callback = _ServeEpoch(self)

    def _epoch(self, epoch: int, fresh: tuple[np.ndarray, ...]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(epoch, inputs, order, targets): the epoch's own targets when augmentation moved them."""
        inputs, order, *targets = fresh
        return epoch, inputs, order, self.task.keras_targets(targets[0]) if targets else self.targets

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch`` (1-based) from now on."""
        if epoch == self.served[0]:
            return
        fresh = self.task.epoch_batches(self.split, epoch, self.train, self.seed)
        if fresh is None:
            raise RuntimeError(f"the task gave epoch {epoch} no inputs of its own, unlike epoch {self.served[0]}")
        self.served = self._epoch(epoch, fresh)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        _, x, order, targets = self.served
        rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        batch = (x[rows], targets[rows])
        return batch if self.weights is None else (*batch, self.weights[rows])


class _ServeEpoch(keras.callbacks.Callback):
    """Tells an :class:`_EpochBatches` which epoch begins (Keras counts from 0, the data from 1)."""

    def __init__(self, dataset: _EpochBatches):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.dataset.set_epoch(epoch + 1)


def fit(
    model: keras.Model, data: ProcessedData, task: Task, train: Any, seed: int, model_dir: Path, live: Live,
    checkpoints: Checkpoints | None = None,
) -> Loaded:
    """Train with Adam; keep the best epoch by validation loss, write it to ``model_dir`` when
    training ends (a canonical ``.keras`` archive: equal models, equal bytes) and return it.

    The task gives the loss, the metrics, the targets and any per-example weights; the
    validation loss is weighted the same way, so the best model is chosen on the same loss as
    in the torch loop. With ``checkpoints``, every epoch ends with a checkpoint of the whole
    training state, and a killed run's checkpoint is continued from its next epoch: the
    variables are restored, then ``fit`` runs from ``initial_epoch`` (measured to end with
    exactly the weights and logs of an uninterrupted fit).
    """
    model.compile(optimizer=keras.optimizers.Adam(train.learning_rate), **task.keras_compile(train))
    resumed = checkpoints.resumed if checkpoints is not None else None
    resumable: list[_Resumable] = []

    def restored() -> dict[str, Any] | None:
        """The checkpointed counters of the next resumable callback (same params, same list)."""
        return resumed.state["callbacks"][len(resumable)] if resumed is not None else None

    with contextlib.ExitStack() as stack:
        work = checkpoints.work_dir if checkpoints is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        best_path = work / BEST_FILE
        best_path.unlink(missing_ok=True)
        monitor, mode = monitored(train, task)
        resumable.append(_ModelCheckpoint(str(best_path), monitor=monitor, mode=mode, save_best_only=True,
                                          restored=restored()))
        from dvclive.keras import DVCLiveCallback

        callbacks = [resumable[0], DVCLiveCallback(live=live), _PrintEvery(train.log_every)]
        if train.early_stopping:
            resumable.append(_EarlyStopping(monitor=monitor, mode=mode, patience=train.early_stopping.patience,
                                            restored=restored()))
            callbacks.append(resumable[-1])
        if train.reduce_lr:
            resumable.append(_ReduceLROnPlateau(
                monitor=monitor, mode=mode, factor=train.reduce_lr.factor, patience=train.reduce_lr.patience,
                min_lr=train.reduce_lr.min_lr, restored=restored()))
            callbacks.append(resumable[-1])
        if checkpoints is not None:
            callbacks.append(_Checkpoint(checkpoints, resumable, best_path))
        initial_epoch, stopped = 0, False
        if resumed is not None:
            _restore(model, resumed)
            if (resumed.files / BEST_FILE).exists():
                shutil.copyfile(resumed.files / BEST_FILE, best_path)
            initial_epoch, stopped = resumed.epoch, resumed.stopped
        if not stopped and initial_epoch < train.epochs:
            train_split, val_split = data.split("train"), data.split("val")
            x_train, y_train = task.inputs(train_split), task.targets(train_split)
            validation_data = (task.inputs(val_split), task.keras_targets(task.targets(val_split)))
            val_weights = task.sample_weights(task.targets(val_split), train)
            if val_weights is not None:
                validation_data += (val_weights,)
            fresh = task.epoch_batches(train_split, initial_epoch + 1, train, seed)
            if fresh is None:
                model.fit(
                    x_train,
                    task.keras_targets(y_train),
                    sample_weight=task.sample_weights(y_train, train),
                    validation_data=validation_data,
                    epochs=train.epochs,
                    initial_epoch=initial_epoch,
                    batch_size=train.batch_size or len(x_train),
                    shuffle=True,
                    callbacks=callbacks,
                    verbose=0,
                )
            else:  # the task's own inputs every epoch, in its order: the torch loop's batches
                batches = _EpochBatches(task, train_split, train, seed, task.keras_targets(y_train),
                                        task.sample_weights(y_train, train), initial_epoch + 1, fresh)
                model.fit(
                    batches,
                    validation_data=validation_data,
                    epochs=train.epochs,
                    initial_epoch=initial_epoch,
                    validation_batch_size=train.batch_size or len(x_train),  # as in the array path
                    shuffle=False,
                    callbacks=[batches.callback, *callbacks],
                    verbose=0,
                )
        if not best_path.exists():
            raise RuntimeError("no epoch had a finite validation loss: there is no best model to keep")
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / MODEL_FILE).write_bytes(canonical_keras(best_path.read_bytes()))
    return load(model_dir, build=None, task=task, train=train)


def canonical_keras(archive: bytes) -> bytes:
    """A ``.keras`` archive made reproducible, so two equal models give byte-identical files (and
    DVC sees no change): the save date dropped from ``metadata.json``; the ``shared_object_id``
    values in ``config.json`` (Python ``id()``s of objects several layers share, which differ in
    every process) renumbered 0, 1, ... in order of appearance (they only pair objects up on
    loading); fixed zip timestamps and member order. Keras loads it as usual."""

    def renumber(value: Any, ids: dict[Any, int]) -> Any:
        if isinstance(value, dict):
            return {key: ids.setdefault(item, len(ids)) if key == "shared_object_id" else renumber(item, ids)
                    for key, item in value.items()}
        if isinstance(value, list):
            return [renumber(item, ids) for item in value]
        return value

    def rewrite(name: str, contents: bytes) -> bytes:
        if name == "metadata.json":
            metadata = json.loads(contents)
            metadata.pop("date_saved", None)
            return json.dumps(metadata).encode()
        if name == "config.json":
            return json.dumps(renumber(json.loads(contents), {})).encode()
        return contents

    return canonical_zip(archive, rewrite)


@dataclass(frozen=True)
class Loaded:
    """A trained Keras model (with the project's prediction head behind it, if the model has one)
    and the names the task gives its outputs."""

    model: keras.Model
    output_names: tuple[str, ...]


def load(model_dir: Path, build: Callable[[], keras.Model] | None, task: Task, train: Any = None,
         head: Callable[[Any], Any] | None = None) -> Loaded:
    """Load the best checkpoint (``build`` is unused: the .keras file holds the architecture).
    ``head``: the project's prediction head for this model (a detector's decoding, called on the
    model's output tensor), put behind it in one functional model that prediction and export run."""
    model = keras.models.load_model(model_dir / MODEL_FILE)
    if head is not None:
        decoded = head(model.outputs[0])
        if isinstance(decoded, dict):  # in the task's output order: ONNX outputs are named by position
            decoded = [decoded[name] for name in task.output_names]
        model = keras.Model(model.inputs, decoded, name=f"{model.name}_decoded")
    return Loaded(model, task.output_names)


def predict(loaded: Loaded, x: np.ndarray) -> Predictions:
    outputs = loaded.model.predict(x, batch_size=1024, verbose=0)
    if isinstance(outputs, dict):
        return outputs
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return dict(zip(loaded.output_names, outputs, strict=True))


def export(
    loaded: Loaded, export_dir: Path, sample: np.ndarray,
    input_scaler: dict | None = None, output_scaler: dict | None = None, stem: keras.Model | None = None,
) -> dict[str, Path]:
    """Write the native ``.keras`` file and an ONNX graph (via tf2onnx) with a dynamic batch axis.

    With scalers, both take raw inputs and give outputs in original units: Rescaling layers
    ``x * (1 / scale) + (-mean / scale)`` in front and ``y * scale + mean`` behind (Keras'
    Normalization layer with fixed statistics holds them as captured tensors, which tf2onnx turns
    into extra graph inputs). A frozen ``stem`` (its cached output is what the model takes) goes
    in front of the model, so the exports take the raw inputs the stem takes.
    """
    export_dir.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    if input_scaler is not None or output_scaler is not None or stem is not None:
        layers = [keras.Input(shape=sample.shape[1:], dtype=str(sample.dtype))]
        if input_scaler is not None:
            mean = np.asarray(input_scaler["mean"], dtype="float32")
            scale = np.asarray(input_scaler["scale"], dtype="float32")
            layers.append(keras.layers.Rescaling(scale=1.0 / scale, offset=-mean / scale))
        if stem is not None:
            layers.append(stem)
        layers.append(model)
        if output_scaler is not None:
            layers.append(keras.layers.Rescaling(
                scale=np.asarray(output_scaler["scale"], dtype="float32"),
                offset=np.asarray(output_scaler["mean"], dtype="float32")))
        model = keras.Sequential(layers, name=f"{model.name}_raw_input")
    native, onnx_path = export_dir / MODEL_FILE, export_dir / "model.onnx"
    with atomic_path(native, suffix=".keras") as tmp:
        model.save(tmp)
        tmp.write_bytes(canonical_keras(tmp.read_bytes()))
    model.predict(sample[:1], verbose=0)  # ONNX export needs a built, called model
    with warnings.catch_warnings():  # tf2onnx probes the long-gone np.object: not the user's concern
        warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
        model.export(onnx_path, format="onnx", verbose=False)
    import onnx

    onnx.save(canonical_names(onnx.load(onnx_path)), onnx_path)  # tf2onnx's names vary run to run
    return {"native": native, "onnx": onnx_path}
