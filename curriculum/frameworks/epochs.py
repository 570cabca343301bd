"""Per-epoch bookkeeping for the hand-written training loops (PyTorch, NumPy).

Keras gets these from its callbacks; the other loops share this one implementation so all
frameworks log the same DVCLive curves and apply the same early-stopping and best-weights rules.
Its counters go into every resumable checkpoint (:meth:`EpochEnd.state`, :meth:`EpochEnd.restore`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from curriculum.frameworks.checkpoints import decode_value, encode_value

if TYPE_CHECKING:
    from dvclive import Live  # only train logs, and imports it itself


class EpochEnd:
    """Logs an epoch's loss and the task's epoch metric, keeps the best weights by validation
    loss, or by the validation epoch metric with ``train.monitor: metric`` (``save_checkpoint`` is
    called on every improvement) and decides early stopping. :meth:`score` is the monitored value
    as a number to minimise (what the reduce-LR schedulers step on)."""

    def __init__(self, live: Live, train: Any, task: Any, save_checkpoint: Callable[[], None]):
        self.live = live
        self.metric = task.epoch_metric
        self.monitor, mode = monitored(train, task)
        self.sign = -1.0 if mode == "max" else 1.0
        self.save_checkpoint = save_checkpoint
        self.log_every = train.log_every
        self.patience = train.early_stopping.patience if train.early_stopping else None
        self.best = float("inf")
        self.epochs_without_improvement = 0

    def score(self, val_loss: float, val_metric: float) -> float:
        return self.sign * (val_metric if self.monitor != "val_loss" else val_loss)

    def state(self) -> dict[str, Any]:
        """The early-stopping counters, as JSON that :meth:`restore` reads back exactly."""
        return {"best": encode_value(self.best),
                "epochs_without_improvement": self.epochs_without_improvement}

    def restore(self, state: dict[str, Any]) -> None:
        self.best = decode_value(state["best"])
        self.epochs_without_improvement = state["epochs_without_improvement"]

    def __call__(
        self, epoch: int, train_loss: float, train_metric: float, val_loss: float, val_metric: float,
        learning_rate: float,
    ) -> bool:
        """Record the epoch; return True when training should stop early."""
        for name, value in {
            "train/loss": train_loss, f"train/{self.metric}": train_metric,
            "eval/loss": val_loss, f"eval/{self.metric}": val_metric, "train/learning_rate": learning_rate,
        }.items():
            self.live.log_metric(name, value)
        self.live.next_step()
        if epoch % self.log_every == 0:
            print(f"epoch {epoch}: loss {train_loss:.4f} {self.metric} {train_metric:.4f} "
                  f"val_loss {val_loss:.4f} val_{self.metric} {val_metric:.4f} lr {learning_rate:.2e}", flush=True)
        score = self.score(val_loss, val_metric)
        if score < self.best:
            self.best, self.epochs_without_improvement = score, 0
            self.save_checkpoint()
            return False
        self.epochs_without_improvement += 1
        if self.patience is not None and self.epochs_without_improvement >= self.patience:
            print(f"early stopping: no {self.monitor} improvement in {self.patience} epochs", flush=True)
            return True
        return False


def validation_values(task: Any) -> dict[str, str]:
    """The validation values every training loop logs per epoch, as Keras names them (``val_loss``,
    ``val_<metric>``), each with whether better is ``"min"`` or ``"max"`` (Keras' callback modes)."""
    return {"val_loss": "min", f"val_{task.epoch_metric}": "max" if task.epoch_metric_higher_is_better else "min"}


def monitored(train: Any, task: Any) -> tuple[str, str]:
    """The validation value that picks the kept epoch and stops early, and its mode."""
    name = "val_loss" if train.monitor == "loss" else f"val_{task.epoch_metric}"
    return name, validation_values(task)[name]
