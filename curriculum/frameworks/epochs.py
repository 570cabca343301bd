"""Per-epoch bookkeeping for the hand-written training loops (PyTorch, NumPy).

Keras gets these from its callbacks; the other loops share this one implementation so all
frameworks log the same DVCLive curves and apply the same early-stopping and checkpoint rules.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from dvclive import Live


class EpochEnd:
    """Logs an epoch's metrics, keeps the best checkpoint by validation loss and decides early stopping."""

    def __init__(self, live: Live, train_params: Mapping[str, Any], save_checkpoint: Callable[[], None]):
        self.live = live
        self.save_checkpoint = save_checkpoint
        self.log_every = train_params.get("log_every") or 1
        self.patience = (train_params.get("early_stopping") or {}).get("patience")
        self.best_val_loss = float("inf")
        self.epochs_without_improvement = 0

    def __call__(
        self, epoch: int, train_loss: float, train_accuracy: float, val_loss: float, val_accuracy: float,
        learning_rate: float,
    ) -> bool:
        """Record the epoch; return True when training should stop early."""
        for name, value in {
            "train/loss": train_loss, "train/accuracy": train_accuracy,
            "eval/loss": val_loss, "eval/accuracy": val_accuracy, "train/learning_rate": learning_rate,
        }.items():
            self.live.log_metric(name, value)
        self.live.next_step()
        if epoch % self.log_every == 0:
            print(f"epoch {epoch}: loss {train_loss:.4f} acc {train_accuracy:.4f} "
                  f"val_loss {val_loss:.4f} val_acc {val_accuracy:.4f} lr {learning_rate:.2e}", flush=True)
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.epochs_without_improvement = val_loss, 0
            self.save_checkpoint()
            return False
        self.epochs_without_improvement += 1
        if self.patience is not None and self.epochs_without_improvement >= self.patience:
            print(f"early stopping: no val_loss improvement in {self.patience} epochs", flush=True)
            return True
        return False
