"""Resumable training: a checkpoint after every completed epoch, and outputs written only at the end.

The train stage gets a checkpoint directory that is deliberately not a DVC output (DVC deletes
outputs before a stage runs, and ``persist`` outputs turn its run-cache off). A killed run loses
at most the epoch it was in; the next run with the same fingerprint (project, variant, model
meta with the typed train config's identity, seed, and a hash of the processed data files)
continues from the next epoch and ends with exactly the model, metrics and curves of an
uninterrupted run. A checkpoint with another fingerprint is refused, naming what differs (the
train stage also fingerprints the repository code it has loaded, so edited code is not mixed
into a half-finished run).

Layout of a checkpoint directory::

    checkpoint.json   the commit point: fingerprint, epoch, early-stopped flag, the DVCLive history
                      so far, Python's and NumPy's global RNG states, the back end's JSON state and
                      the folder holding its files
    epoch-NNNN/       the back end's files for that epoch (weights, optimizer and RNG tensors, best weights)
    live/             DVCLive's working directory, rebuilt from the history on resume
    work/             scratch files of the back end (Keras' best-model file)

A checkpoint is committed in three steps: the back end writes its files into a fresh folder,
which is fsynced and renamed into place; then ``checkpoint.json`` is replaced atomically (temp
file, fsync, ``os.replace``, fsync of the directory). A kill at any point leaves the previous
checkpoint intact. This module knows nothing about frameworks: the back ends capture and restore
their own state through :class:`Checkpoints` and :class:`Checkpoint`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from curriculum.io import atomic_path

FORMAT = 1  # bump when the checkpoint layout changes: older checkpoints are then refused
MANIFEST = "checkpoint.json"
LIVE = "live"
WORK = "work"
_EPOCH_PREFIX = "epoch-"


# --------------------------------------------------------------------------- fingerprint


def data_hash(directory: Path) -> str:
    """SHA-256 over every file under ``directory``: relative path, size and contents."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            contents = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{path.stat().st_size}\0{contents}\n".encode())
    return digest.hexdigest()


def code_hashes(packages: Sequence[Path]) -> dict[str, str]:
    """SHA-256 of the source of every loaded module from these package directories (the
    repository's own code: stage, project, task, back end, model builder...), by path relative to
    the package's parent directory."""
    roots = [Path(package).resolve() for package in packages]
    hashes = {}
    for module in list(sys.modules.values()):
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        for root in roots:
            if path.suffix == ".py" and path.is_relative_to(root):
                hashes[path.relative_to(root.parent).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(hashes.items()))


def fingerprint(
    project: str, variant: str, meta: dict[str, Any], seed: int, data_dir: Path, code: Sequence[Path] = (),
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: ``params`` is the model meta (architecture, data
    spec, the train config's identity), ``data`` a hash of the processed data files, ``code`` the
    hashes of the modules loaded so far from the ``code`` package directories, so a checkpoint of
    edited code is not continued by the new code."""
    return {"format": FORMAT, "project": project, "variant": variant, "params": meta, "seed": seed,
            "data": data_hash(data_dir), "code": code_hashes(code)}


class CheckpointMismatch(Exception):
    """The checkpoint directory holds the state of a different run; the message is one line."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words: ``params (train.epochs: 3 -> 5)``, ``seed (1 -> 2)``,
    ``data (...)``, ``code (stages/train.py changed)``."""
    found = []
    if saved.get("format") != current.get("format"):
        return [f"checkpoint format ({saved.get('format')} -> {current.get('format')})"]
    for part in ("project", "variant", "seed"):
        if saved.get(part) != current.get(part):
            found.append(f"{part} ({saved.get(part)!r} -> {current.get(part)!r})")
    old, new = _flatten(saved.get("params", {})), _flatten(current.get("params", {}))
    keys = [key for key in sorted(old.keys() | new.keys()) if old.get(key, "<unset>") != new.get(key, "<unset>")]
    if keys:
        shown = ", ".join(f"{key}: {old.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}" for key in keys[:3])
        found.append(f"params ({shown}{', ...' if len(keys) > 3 else ''})")
    if saved.get("data") != current.get("data"):
        found.append("data (the processed data files changed)")
    old_code, new_code = saved.get("code", {}), current.get("code", {})
    changed = [name for name in sorted(old_code.keys() | new_code.keys()) if old_code.get(name) != new_code.get(name)]
    if changed:
        found.append(f"code ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''} changed)")
    return found


# --------------------------------------------------------------------------- values and RNG states in JSON


def encode_value(value: Any) -> Any:
    """A logged value or counter as JSON that decodes to the same type and bits (NumPy scalars keep their dtype)."""
    if isinstance(value, np.generic):
        return {"numpy": value.dtype.str, "value": value.item()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}: {value!r}")


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return np.dtype(value["numpy"]).type(value["value"])
    return value


def _global_rng_states() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)]}


def _set_global_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


# --------------------------------------------------------------------------- durable files


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (and ``root``)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def write_durably(target: Path, write: Callable[[Path], None]) -> None:
    """Write ``target`` atomically and durably: ``write(tmp)`` beside it, fsync, ``os.replace``, fsync the directory."""
    with atomic_path(target, suffix=target.suffix) as tmp:
        write(tmp)
        fsync_path(tmp)
    fsync_path(target.parent)


def replace_dir(staged: Path, target: Path) -> None:
    """Put the finished directory ``staged`` where ``target`` is: two renames, so ``target`` is
    either the old or the new directory, never a half-written one."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(staged, target)
    fsync_path(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(target: Path) -> Path:
    """Where the finished contents of ``target`` are put together (a sibling, so the final rename
    stays on one file system); whatever a killed run left there is removed. Not created."""
    staged = Path(target).with_name(f".{Path(target).name}.staging")
    shutil.rmtree(staged, ignore_errors=True)
    return staged


def publish_dir(staged: Path, target: Path) -> None:
    """Make the directory ``staged`` durable, then swap it in as ``target``."""
    fsync_tree(staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(staged, target)


def publish_live(source: Path, target: Path) -> None:
    """Copy a finished DVCLive directory's ``plots/`` and ``metrics.json`` into ``target``: the
    plots directory is swapped in whole, then the metrics file is replaced atomically."""
    target.mkdir(parents=True, exist_ok=True)
    plots = Path(source) / "plots"
    if plots.exists():
        staged = staging_dir(target / "plots")
        shutil.copytree(plots, staged)
        publish_dir(staged, target / "plots")
    metrics = Path(source) / "metrics.json"
    if metrics.exists():
        write_durably(target / "metrics.json", lambda tmp: shutil.copyfile(metrics, tmp))


def canonical_zip(data: bytes, rewrite: Callable[[str, bytes], bytes] | None = None) -> bytes:
    """A zip archive rewritten so equal contents give equal bytes: members sorted by name, fixed
    timestamps and attributes, each member's compression kept; ``rewrite(name, data)`` may change
    a member's data (to drop a save date, say)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info.filename, info.compress_type, archive.read(info)) for info in archive.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, compression, contents in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, rewrite(name, contents) if rewrite else contents)
    return out.getvalue()


# --------------------------------------------------------------------------- DVCLive history


class RecordingLive:
    """A DVCLive ``Live`` that also records every logged value, per completed step, so a checkpoint
    can hold the curves so far and a resumed run can rebuild them exactly. The back ends only call
    ``log_metric``, ``next_step`` and ``end``; anything else goes to the wrapped ``Live``."""

    def __init__(self, live: Any, history: list[list[list[Any]]]):
        self._live = live
        self.history = history
        self._current: list[list[Any]] = []

    def replay(self) -> None:
        """Log the recorded history again into the (fresh) wrapped ``Live``."""
        for step in self.history:
            for name, value in step:
                self._live.log_metric(name, decode_value(value))
            self._live.next_step()

    def log_metric(self, name: str, val: Any, *args: Any, **kwargs: Any) -> None:
        self._current.append([name, encode_value(val)])
        self._live.log_metric(name, val, *args, **kwargs)

    def next_step(self) -> None:
        self.history.append(self._current)
        self._current = []
        self._live.next_step()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live, name)


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A committed checkpoint: ``epoch`` epochs are done (``stopped``: early stopping ended
    training there); ``state`` is the back end's JSON state, ``files`` the folder of its files."""

    epoch: int
    stopped: bool
    state: dict[str, Any]
    files: Path


class Checkpoints:
    """One training run's checkpoints in ``directory``, for the run identified by ``fingerprint``."""

    def __init__(self, directory: Path, fingerprint: dict[str, Any]):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.resumed: Checkpoint | None = None
        self._rng_states: dict[str, Any] | None = None
        self._history: list[list[list[Any]]] = []
        self._live: RecordingLive | None = None

    @property
    def work_dir(self) -> Path:
        """Scratch space for the back end, removed with the checkpoint."""
        path = self.directory / WORK
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load(self) -> Checkpoint | None:
        """The committed checkpoint to resume from, or None (leftovers of a run killed before its
        first commit are removed). Raises :class:`CheckpointMismatch` when the checkpoint is not
        this run's. Restores nothing yet: see :meth:`resume_global_rngs` and the back ends."""
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            if self.directory.exists():
                self._remove_leftovers(keep=None)
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointMismatch(f"{self.directory}: {MANIFEST} is unreadable ({error}); to discard the "
                                     f"checkpoint and train from scratch, delete the directory: rm -r {self.directory}") from None
        found = differences(manifest.get("fingerprint", {}), self.fingerprint)
        if found:
            raise CheckpointMismatch(
                f"{self.directory}: holds a checkpoint of another run (epoch {manifest.get('epoch')}); "
                f"it differs in {'; '.join(found)}. To discard it and train from scratch, delete the "
                f"directory: rm -r {self.directory}")
        self._remove_leftovers(keep=manifest["files"])
        self._history = manifest["history"]
        self._rng_states = manifest["rng"]
        self.resumed = Checkpoint(manifest["epoch"], manifest["stopped"], manifest["state"],
                                  self.directory / manifest["files"])
        return self.resumed

    def _remove_leftovers(self, keep: str | None) -> None:
        for path in self.directory.iterdir():
            stale = path.name.startswith((_EPOCH_PREFIX, f".{_EPOCH_PREFIX}", f".{MANIFEST}.")) and path.name != keep
            if stale or path.name in (LIVE, WORK):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def resume_global_rngs(self) -> None:
        """Put Python's and NumPy's global generators where the checkpointed epoch left them (call
        right before the first resumed epoch; a no-op when nothing is resumed)."""
        if self._rng_states is not None:
            _set_global_rng_states(self._rng_states)

    @contextlib.contextmanager
    def live(self) -> Iterator[RecordingLive]:
        """DVCLive writing into ``<directory>/live`` (never where DVC shows results), holding the
        resumed history already; the finished directory is what :func:`publish_live` copies."""
        from dvclive import Live

        live_dir = self.directory / LIVE
        shutil.rmtree(live_dir, ignore_errors=True)
        with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
            self._live = RecordingLive(live, self._history)
            self._live.replay()
            yield self._live
        self._live = None

    @property
    def live_dir(self) -> Path:
        return self.directory / LIVE

    def save(self, epoch: int, stopped: bool, state: dict[str, Any], write_files: Callable[[Path], None]) -> None:
        """Commit the end of ``epoch`` (1-based): ``write_files(folder)`` writes the back end's
        files, ``state`` is its JSON state; the DVCLive history and the global RNG states are added here."""
        if self._live is None:
            raise RuntimeError("Checkpoints.save needs the run's DVCLive from Checkpoints.live()")
        if len(self._history) != epoch:
            raise RuntimeError(f"checkpoint of epoch {epoch} with {len(self._history)} logged epochs")
        name = f"{_EPOCH_PREFIX}{epoch:04d}"
        staged, folder = self.directory / f".{name}.tmp", self.directory / name
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        write_files(staged)
        fsync_tree(staged)
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(staged, folder)
        manifest = {"format": FORMAT, "fingerprint": self.fingerprint, "epoch": epoch, "stopped": bool(stopped),
                    "files": name, "state": state, "rng": _global_rng_states(), "history": self._history}
        text = json.dumps(manifest, separators=(",", ":"))
        write_durably(self.directory / MANIFEST, lambda tmp: tmp.write_text(text))
        for path in self.directory.glob(f"{_EPOCH_PREFIX}*"):
            if path.name != name:
                shutil.rmtree(path)

    def discard(self) -> None:
        """Remove the checkpoint directory (the run finished and its outputs are in place)."""
        shutil.rmtree(self.directory, ignore_errors=True)
