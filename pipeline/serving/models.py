"""Finding, loading and reloading the exported models a server serves.

Every variant in ``params.yaml`` is a served model named ``<project>-<variant>`` (dvc.yaml's
``export@`` stage names). Its files -- ``model.onnx``, the ``serving.json`` card, the fitted
artifacts beside them -- come from the DVC workspace, or from a git revision through ``dvc.api``
(which reads DVC's cache or remote). A model that cannot be loaded is kept as a
:class:`LoadFailure` with the reason; the others serve regardless.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel

from curriculum.projects import get_project
from curriculum.serving import CARD_FILE, Interface

EXPORT_DIR = "data/{project}/export/{variant}"
METRICS_FILE = "reports/{project}/{variant}/metrics.json"
MAX_FACT_ITEMS = 256  # card lists longer than this (a forecaster's series) are not repeated in GET /v1/models


class Workspace:
    """The files as they are on disk in the repository (what ``dvc repro`` last wrote)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.rev = None

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def commit(self) -> str | None:
        return git_commit(self.root, "HEAD")

    def signature(self) -> tuple:
        """Changes when ``dvc repro`` (or ``dvc checkout``) records new outputs: the watch's trigger."""
        stats = [(self.root / name).stat() for name in ("dvc.lock", "params.yaml") if (self.root / name).exists()]
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)


class Revision:
    """The files of a git revision: git-tracked ones from git, DVC outputs from the DVC cache (or
its remote, as ``dvc.api`` reads them)."""

    def __init__(self, root: Path, rev: str):
        from dvc.api import DVCFileSystem

        self.root = Path(root)
        self.rev = rev
        self.resolved = git_commit(self.root, rev)  # once: a branch that moves later does not move what is served
        if self.resolved is None:
            raise ValueError(f"{rev!r} is not a git revision of {self.root}")
        self.files = DVCFileSystem(str(self.root), rev=self.resolved)  # git's files and DVC's outputs there

    def read(self, path: str) -> bytes:
        if not self.files.exists(path):
            raise FileNotFoundError(path)
        return self.files.read_bytes(path)

    def commit(self) -> str | None:
        return self.resolved

    def signature(self) -> tuple:
        return (self.resolved,)  # a commit's files never change


def git_commit(root: Path, rev: str) -> str | None:
    result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root,
                            capture_output=True, text=True)
    return result.stdout.strip() or None


def export_hashes(lock_text: bytes | str | None) -> dict[str, str]:
    """``<project>-<variant>`` -> the DVC hash (``md5`` of the directory) of its export, from a dvc.lock."""
    stages = (yaml.safe_load(lock_text) or {}).get("stages", {}) if lock_text else {}
    return {name.removeprefix("export@"): stage["outs"][0]["md5"]
            for name, stage in stages.items() if name.startswith("export@") and stage.get("outs")}


@dataclass
class LoadFailure:
    """A served name whose model could not be loaded, and why."""

    name: str
    project: str
    variant: str
    error: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "project": self.project, "variant": self.variant, "status": "failed",
                "error": self.error}


@dataclass
class ServedModel:
    """One loaded model: its onnxruntime session and everything needed to read requests for it."""

    name: str
    project: str
    variant: str
    framework: str
    card: dict[str, Any]
    session: Any
    interface: Interface
    task: Any
    request_model: type[BaseModel]
    prepared: Any  # what the interface reads requests with (a tokenizer...), from the artifacts export wrote
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)
    reload_error: str | None = None

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def score(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The exported graph on one batch, outputs named as the task names them (thread-safe:
        onnxruntime sessions may run concurrently)."""
        return dict(zip(self.task.output_names, self.session.run(None, {self.input_name: inputs})))

    def describe(self) -> dict[str, Any]:
        session_input = self.session.get_inputs()[0]
        return {
            "name": self.name, "project": self.project, "variant": self.variant, "status": "ready",
            "framework": self.framework, "model": self.card["model"], "widget": self.card["widget"],
            "batchable": self.card["batchable"],
            "input": {"facts": {key: value for key, value in self.card.items()  # the card, less the bulk (a series)
                                if not (isinstance(value, list) and len(value) > MAX_FACT_ITEMS)},
                      "request_schema": self.request_model.model_json_schema(),
                      "example": self.interface.example(self.card),
                      "graph": {"name": session_input.name, "shape": session_input.shape, "type": session_input.type}},
            "output": {"names": list(self.task.output_names),
                       "graph": [{"name": o.name, "shape": o.shape, "type": o.type} for o in self.session.get_outputs()]},
            "provenance": self.provenance, "test_metrics": self.metrics,
            "loaded_at": self.loaded_at, **({"reload_error": self.reload_error} if self.reload_error else {}),
        }


def served_names(source: Workspace | Revision) -> dict[str, tuple[str, str, str]]:
    """``<project>-<variant>`` -> (project, variant, framework), from the params' generated variant
    list: every variant of every project that declares a serving interface."""
    params = yaml.safe_load(source.read("params.yaml")) or {}
    return {name: (spec["project"], spec["variant"], spec["framework"])
            for name, spec in (params.get("variants") or {}).items()
            if get_project(spec["project"]).serving is not None}


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def load_model(source: Workspace | Revision, name: str, project_name: str, variant: str, framework: str, *,
               max_batch: int, threads: int, dvc_hash: str | None, committed_hash: str | None,
               commit: str | None) -> ServedModel:
    """Read and check one export of a project with a serving interface; raises with a message
    naming the missing or bad file. ``dvc_hash``: its export's hash in the source's dvc.lock;
    ``committed_hash``: in HEAD's."""
    import onnxruntime as ort

    project = get_project(project_name)
    directory = EXPORT_DIR.format(project=project_name, variant=variant)
    card = json.loads(read_file(source, f"{directory}/{CARD_FILE}"))
    artifacts = {artifact: json.loads(read_file(source, f"{directory}/{artifact}.json"))
                 for artifact in project.serving_artifacts.get(card["model"], ())}
    onnx_bytes = read_file(source, f"{directory}/model.onnx")
    session = ort.InferenceSession(onnx_bytes, session_options(threads), providers=["CPUExecutionProvider"])
    try:
        metrics = json.loads(read_file(source, METRICS_FILE.format(project=project_name, variant=variant)))
    except FileNotFoundError:
        metrics = {}
    return ServedModel(
        name=name, project=project_name, variant=variant, framework=framework, card=card, session=session,
        interface=project.serving, task=project.task,
        request_model=project.serving.request_model(card, max_batch),
        prepared=project.serving.prepare(card, artifacts),
        provenance={"source": "workspace" if source.rev is None else f"revision {source.rev}",
                    "git_commit": commit, "dvc_path": directory, "dvc_md5": dvc_hash,
                    # in the workspace: whether HEAD's dvc.lock records this same export
                    "committed": dvc_hash is not None and committed_hash == dvc_hash,
                    "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest()},
        metrics={key: metrics[key] for key in project.task.table_metrics() if key in metrics},
    )


def read_file(source: Workspace | Revision, path: str) -> bytes:
    try:
        return source.read(path)
    except FileNotFoundError:
        where = "" if source.rev is None else f" at revision {source.rev}"
        raise FileNotFoundError(f"{path} is missing{where} (run `dvc repro` to export it, or `dvc pull`)") from None


class Registry:
    """The served models by name, loaded from one source and reloaded when it changes.

    Loading replaces a model only when the new one loads: a model that fails to reload keeps
    serving its previous version (its ``reload_error`` says why); a name never loaded is a
    :class:`LoadFailure`. Readers see one complete set of models: a load replaces it whole.
    """

    def __init__(self, source: Workspace | Revision, *, max_batch: int, threads: int):
        self.source = source
        self.max_batch = max_batch
        self.threads = threads
        self.models: dict[str, ServedModel | LoadFailure] = {}
        self.loaded = False
        self.signature: tuple | None = None
        self._lock = threading.Lock()

    def load(self, explicit: bool = True) -> dict[str, list[str]]:
        """(Re)load every model whose export changed; returns the names loaded, unchanged and failed.
        A model changed when dvc.lock records a new hash for its export, or, on an ``explicit``
        reload, when its ONNX bytes differ (a file copied in by hand): the watch waits for dvc.lock,
        which DVC writes once a stage's outputs are complete. The new set replaces the old at once."""
        with self._lock:
            signature = self.source.signature()
            lock_hashes = export_hashes(self._optional("dvc.lock"))
            commit = self.source.commit()
            committed = lock_hashes if self.source.rev is not None else export_hashes(self._head_lock())
            outcome: dict[str, list[str]] = {"loaded": [], "unchanged": [], "failed": []}
            models: dict[str, ServedModel | LoadFailure] = {}
            for name, (project, variant, framework) in served_names(self.source).items():
                current = self.models.get(name)
                if isinstance(current, ServedModel) and not self._changed(current, lock_hashes.get(name), explicit):
                    models[name] = current
                    outcome["unchanged"].append(name)
                    continue
                try:
                    models[name] = load_model(
                        self.source, name, project, variant, framework, max_batch=self.max_batch, threads=self.threads,
                        dvc_hash=lock_hashes.get(name), committed_hash=committed.get(name), commit=commit)
                    outcome["loaded"].append(name)
                except Exception as error:  # noqa: BLE001 -- reported per model; the others still serve
                    message = f"{type(error).__name__}: {error}"
                    if isinstance(current, ServedModel):
                        current.reload_error = message
                        models[name] = current
                    else:
                        models[name] = LoadFailure(name, project, variant, message)
                    outcome["failed"].append(name)
            self.models, self.loaded, self.signature = models, True, signature
            return outcome

    def _changed(self, model: ServedModel, dvc_hash: str | None, explicit: bool) -> bool:
        if not explicit:  # the watch: only a new hash in dvc.lock (none: the entry is being rewritten)
            return dvc_hash is not None and dvc_hash != model.provenance["dvc_md5"]
        if dvc_hash != model.provenance["dvc_md5"]:
            return True
        try:
            onnx = self.source.read(f"{model.provenance['dvc_path']}/model.onnx")
        except FileNotFoundError:
            return True
        return hashlib.sha256(onnx).hexdigest() != model.provenance["onnx_sha256"]

    def _optional(self, path: str) -> bytes | None:
        try:
            return self.source.read(path)
        except FileNotFoundError:
            return None

    def _head_lock(self) -> str | None:
        result = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=self.source.root, capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else None

