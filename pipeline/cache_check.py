"""Verify DVC's cache against its own object names, quarantine bad objects and repair them.

DVC trusts its cache: ``dvc status``, ``dvc repro`` and ``dvc checkout`` compare the hashes
recorded in ``dvc.lock``/``.dvc`` files with the workspace, and ``LocalHashFileDB.check``
(dvc_data) re-hashes a cache object only when it is writable - a read-only (0o444) object, the
normal state, is taken as named (a writable bad one is silently deleted). A forced ``dvc repro``
does not rewrite an object that already exists. A cache object that rots (a flipped byte, a
truncated copy) is therefore copied back into the workspace by ``dvc checkout`` without a word.
DVC 3 has no ``fsck``; this module is one::

    python -m pipeline.cache_check [--repo PATH] [--repair] [--json REPORT] [--dry-run]

1. Every object under ``<cache>/files/md5/XX/YYYY…`` is re-hashed the way DVC 3 names it:
   the plain md5 of its bytes (``dvc_data.hashfile.hash.fobj_md5`` with ``name="md5"``), for
   ``.dir`` listings too (their name is the md5 of the JSON list DVC serialised, plus ``.dir``).
   DVC 2 objects left directly under ``<cache>/XX/`` are re-hashed with DVC 2's
   ``md5-dos2unix`` (CRLF -> LF for text files). ``.dir`` listings must parse and every object
   they list must exist. Run-cache entries (``<cache>/runs``) are not content-addressed and are
   only counted.
2. A bad object is moved to ``<cache>/quarantine/<md5>`` (never deleted; a line is appended to
   ``quarantine/quarantine.jsonl``) and reported with the ``dvc.lock``/``.dvc`` outputs that use
   it, files inside ``.dir`` outputs included. With the object gone DVC sees it as missing, so
   ``dvc fetch``/``dvc repro`` will write it again.
3. ``--repair`` restores each bad (or earlier quarantined, still-missing) object, first that works:
   (a) from a configured DVC remote (the single object, hash-checked before it is installed);
   (b) from the workspace copy, if it hashes to the object's name (a hardlink/symlink to the bad
   object does not); (c) by ``dvc repro --force --single-item <stage>`` of the stage that
   produces it. Workspace files that ``dvc checkout`` had filled with the bad bytes (DVC's state
   database vouches for them, so ``dvc status`` is silent) are rewritten with
   ``dvc checkout --relink``. Then the whole cache is verified again.
4. Exit code 0 when the cache is (now) clean, 1 when a bad object is left unrepaired, 2 when the
   check could not run (no DVC repo, repo locked by another DVC command).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from dvc_data.hashfile.hash import fobj_md5
from dvc_data.hashfile.istextfile import istextblock

from pipeline.dvc_bridge import venv_dvc

if TYPE_CHECKING:
    from dvc.repo import Repo

DEFAULT_REPO = Path(__file__).resolve().parent.parent
QUARANTINE_DIR = "quarantine"
MANIFEST = "quarantine.jsonl"
MD5 = "md5"
LEGACY = "md5-dos2unix"  # DVC 2.x objects, directly under <cache>/XX/
CHUNK = 2**20  # dvc_data's fobj_md5 reads 1 MiB at a time; the dos2unix rule is applied per chunk

_PREFIX = re.compile(r"^[0-9a-f]{2}$")
_REST = re.compile(r"^[0-9a-f]{30}(\.dir)?$")
_MD5_VALUE = re.compile(r"^[0-9a-f]{32}$")

Log = Callable[[str], Any]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Hashing, exactly as DVC names objects
# --------------------------------------------------------------------------------------------

def object_hash(path: Path | str, hash_name: str = MD5) -> str:
    """The name DVC would give this file's bytes, streamed (``.dir`` suffix not included).

    ``dvc_data.hashfile.hash.fobj_md5``: ``md5`` is the plain md5 of the bytes (DVC 3, files and
    ``.dir`` listings alike); ``md5-dos2unix`` replaces CRLF with LF in every 1 MiB chunk that
    looks like text (DVC 2's rule, used for legacy objects).
    """
    with open(path, "rb") as fobj:
        return fobj_md5(fobj, chunk_size=CHUNK, name=hash_name)


def _dvc2_whole_file_md5(path: Path) -> str:
    """DVC 2.x decided text/binary once per file (first 512 bytes), then dos2unix'd every chunk."""
    with open(path, "rb") as fobj:
        is_text = istextblock(fobj.read(512))
        fobj.seek(0)
        hasher = hashlib.md5(usedforsecurity=False)
        while chunk := fobj.read(CHUNK):
            hasher.update(chunk.replace(b"\r\n", b"\n") if is_text else chunk)
    return hasher.hexdigest()


def matches(path: Path, oid: str, hash_name: str) -> tuple[bool, str]:
    """(whether the file's bytes are the object ``oid``, the hash that was computed)."""
    expected = oid.removesuffix(".dir")
    actual = object_hash(path, hash_name)
    if actual == expected or hash_name != LEGACY:
        return actual == expected, actual
    # Legacy objects: accept DVC 2's own text/binary decision, or a binary file's plain md5.
    for alternative in (_dvc2_whole_file_md5(path), object_hash(path, MD5)):
        if alternative == expected:
            return True, alternative
    return False, actual


def listing_bytes(entries: Iterable[tuple[str, str]]) -> bytes:
    """A ``.dir`` object's bytes, as ``dvc_data.hashfile.tree.Tree.as_bytes`` writes them.

    ``Tree.as_list`` sorts ``{"md5": ..., "relpath": ...}`` by relpath, ``as_bytes`` is
    ``json.dumps(..., sort_keys=True).encode("utf-8")`` and ``Tree.digest`` names the object
    md5(those bytes) + ".dir".
    """
    listing = sorted(({"md5": md5, "relpath": relpath} for relpath, md5 in entries), key=lambda e: e["relpath"])
    return json.dumps(listing, sort_keys=True).encode("utf-8")


def parse_listing(path: Path) -> list[tuple[str, str]]:
    """(relpath, md5) for every entry of a ``.dir`` object; ValueError if it is not one."""
    raw = json.loads(path.read_bytes())
    if not isinstance(raw, list):
        raise ValueError("not a JSON list")
    entries = []
    for entry in raw:
        if not (isinstance(entry, dict) and isinstance(entry.get("relpath"), str)
                and isinstance(entry.get("md5"), str) and _MD5_VALUE.match(entry["md5"])):
            raise ValueError(f"bad entry {entry!r:.80}")
        entries.append((entry["relpath"], entry["md5"]))
    return entries


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

@dataclass
class Reference:
    """An output (or a directory dependency) in the current workspace that uses an object."""
    path: str             # workspace path of the file or directory, relative to the repo root
    out: str              # the output as dvc.lock / the .dvc file declares it
    stage: str            # stage address for ``dvc repro`` (e.g. "preprocess@simple_nn") or the .dvc file
    recorded_in: str      # "dvc.lock" or "data.dvc"
    producible: bool      # a pipeline stage with a command that ``dvc repro`` can rerun
    in_dir: str | None = None  # the .dir object listing the file, for files inside directory outputs
    role: str = "out"     # "out", or "dep": a directory dependency's listing (DVC does not need it cached)

    def describe(self) -> str:
        if self.role == "dep":
            return f"{self.path} (dependency listing of stage {self.stage}, {self.recorded_in})"
        parts = [f"in {self.out}/"] if self.in_dir else []
        parts += [f"stage {self.stage}", self.recorded_in] if self.recorded_in.endswith(".lock") else [self.recorded_in]
        return f"{self.path} ({', '.join(parts)})"


@dataclass
class Problem:
    oid: str
    hash_name: str                 # "md5" (DVC 3) or "md5-dos2unix" (legacy DVC 2 object)
    cache_path: str
    found: str                     # "corrupt", "bad-listing", "unreadable", "quarantined-earlier"
    detail: str
    size: int | None = None
    actual: str | None = None      # the hash the bytes have now
    quarantined_to: str | None = None
    references: list[Reference] = field(default_factory=list)
    outcome: str = "not repaired"  # "restored", "superseded", "not needed", "not repaired", "left in place"
    repaired_by: str | None = None  # "remote <name>", "workspace <path>", "stage <name>"
    # Workspace files holding the bad bytes (``dvc checkout`` copied/linked them from the bad
    # object, and DVC's state database still vouches for them) and those put right again.
    workspace_bad: list[str] = field(default_factory=list)
    workspace_fixed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hint: str | None = None

    @property
    def object_ok(self) -> bool:
        """The cache no longer needs this object repaired (restored, or dvc.lock moved on)."""
        return self.outcome in ("restored", "superseded", "not needed")

    @property
    def resolved(self) -> bool:
        return self.object_ok and set(self.workspace_bad) <= set(self.workspace_fixed)


@dataclass
class Missing:
    oid: str
    hash_name: str
    listed_by: str                 # "<dir oid> (relpath)" or "dvc.lock: out" / "x.dvc: out"


@dataclass
class CacheReport:
    repo: str
    cache_dir: str
    objects_checked: int = 0
    dir_objects: int = 0
    legacy_objects: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    quarantine_dir: str = ""
    quarantine_held: int = 0       # objects in quarantine, this run's included
    cache_types: list[str] = field(default_factory=list)
    remotes: list[str] = field(default_factory=list)
    repair: bool = False
    dry_run: bool = False
    strict: bool = False
    reverified_objects: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No bad object left unrepaired (and, with ``strict``, nothing missing either)."""
        return all(p.resolved for p in self.problems) and not (self.strict and self.missing)

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(clean=self.clean, exit_code=self.exit_code,
                    bad=len(self.problems), resolved=sum(p.resolved for p in self.problems),
                    repaired=sum(p.outcome == "restored" for p in self.problems),
                    unrepaired=sum(not p.resolved for p in self.problems))
        return data

    def summary(self) -> str:
        def mib(n: int) -> str:
            return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} B"

        restored = [p for p in self.problems if p.resolved]
        by_how: dict[str, int] = {}
        for p in restored:
            how = (p.repaired_by or "?").split(" ")[0] if p.outcome == "restored" else p.outcome
            by_how[how] = by_how.get(how, 0) + 1
        left = [p for p in self.problems if not p.resolved]
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()) if v) or "none"
        rows = [
            f"DVC cache check of {self.repo}",
            f"  cache            {self.cache_dir}  (link types: {','.join(self.cache_types) or '?'})",
            f"  objects checked  {self.objects_checked} ({self.dir_objects} .dir listings, "
            f"{self.legacy_objects} legacy md5-dos2unix), {mib(self.bytes_checked)} in {self.seconds:.1f} s",
            f"  bad              {len(self.problems)}",
            f"  resolved         {len(restored)}"
            + (f"  ({', '.join(f'{k}: {v}' for k, v in sorted(by_how.items()))})" if by_how else ""),
            f"  unrepaired       {len(left)}" + ("  (run with --repair)" if left and not self.repair else ""),
            f"  bad in workspace {sum(len(p.workspace_bad) for p in self.problems)} file(s) "
            "checked out from bad objects"
            + (f" ({sum(len(p.workspace_fixed) for p in self.problems)} restored)" if self.repair else ""),
            f"  missing          {len(self.missing)} object(s) referenced but not in the cache"
            + (" (counted as failure: --strict)" if self.strict and self.missing else ""),
            f"  skipped          {skipped}",
            f"  quarantine       {self.quarantine_dir} ({self.quarantine_held} object(s) held)",
            f"  remotes          {', '.join(self.remotes) or 'none configured'}",
        ]
        if self.reverified_objects is not None:
            rows.append(f"  re-verified      {self.reverified_objects} objects after repair")
        if self.problems:
            rows += ["", f"  {'OBJECT':<37} {'SIZE':>9}  {'PROBLEM':<20} {'OUTCOME':<28} USED BY"]
            for p in self.problems:
                outcome = p.outcome + (f" ({p.repaired_by})" if p.repaired_by else "")
                users = "; ".join(r.describe() for r in p.references[:4]) or "nothing in the current workspace"
                if len(p.references) > 4:
                    users += f"; +{len(p.references) - 4} more"
                size = mib(p.size) if p.size is not None else "-"
                rows.append(f"  {p.oid:<37} {size:>9}  {p.found:<20} {outcome:<28} {users}")
                rows.append(f"  {'':<37} {'':>9}  {p.detail}")
                if p.quarantined_to:
                    rows.append(f"  {'':<37} {'':>9}  quarantined to {p.quarantined_to}")
                for path in p.workspace_bad:
                    state = "good again" if path in p.workspace_fixed else "still bad"
                    rows.append(f"  {'':<37} {'':>9}  workspace {path} holds the bad bytes: {state}")
                for note in p.notes:
                    rows.append(f"  {'':<37} {'':>9}  {note}")
                if not p.resolved and p.hint:
                    rows.append(f"  {'':<37} {'':>9}  to repair: {p.hint}")
        if self.missing:
            rows += ["", "  missing objects (not corruption; `dvc fetch`/`dvc pull` brings them from a remote):"]
            rows += [f"    {m.oid} <- {m.listed_by}" for m in self.missing[:20]]
            if len(self.missing) > 20:
                rows.append(f"    ... and {len(self.missing) - 20} more")
        rows += [f"  warning: {w}" for w in self.warnings]
        rows += ["", "Result: " + ("CLEAN (exit 0)" if self.clean else "NOT CLEAN (exit 1)")]
        return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# The repository: cache paths, remotes, which outputs use which object
# --------------------------------------------------------------------------------------------

@dataclass
class _Out:
    oid: str
    hash_name: str
    path: str
    stage: str
    recorded_in: str
    producible: bool
    order: int  # position of its stage in DVC's DAG, upstream first
    role: str = "out"


@dataclass
class _RepoInfo:
    root: Path
    cache_root: Path       # `dvc cache dir`
    files_dir: Path        # <cache>/files/md5, DVC 3 objects
    cache_types: list[str]
    remotes: list[str]     # default first
    outs: list[_Out]
    warnings: list[str] = field(default_factory=list)


def _repo_info(repo) -> _RepoInfo:
    import networkx as nx
    from dvc.cachemgr import LEGACY_HASH_NAMES
    from dvc.stage import PipelineStage

    if repo.cache.local is None:
        raise RuntimeError(f"{repo.root_dir} has no local DVC cache configured")
    root = Path(repo.root_dir)
    remotes = list(repo.config.get("remote", {}))
    default = repo.config["core"].get("remote")
    if default in remotes:
        remotes.remove(default)
        remotes.insert(0, default)

    outs: list[_Out] = []
    warnings: list[str] = []
    try:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        order = {stage: i for i, stage in enumerate(nx.topological_sort(graph.reverse(copy=False)))}
        stages = list(repo.index.stages)
    except Exception as exc:  # noqa: BLE001 - a broken dvc.yaml must not stop the cache check
        warnings.append(f"could not read the pipeline ({type(exc).__name__}: {exc}); objects were verified "
                        "but not mapped to outputs, and no stage can be rerun")
        order, stages = {}, []
    for stage in stages:
        pipeline = isinstance(stage, PipelineStage)
        dvcfile = Path(os.path.relpath(stage.path, root)).as_posix()
        recorded_in = str(Path(dvcfile).with_suffix(".lock")) if pipeline else dvcfile
        # stage.addressing is relative to the current directory; ``dvc repro`` runs in the repo root
        address = (stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}") if pipeline else dvcfile
        for out in stage.outs:
            if not out.use_cache or not out.hash_info or not out.hash_info.value:
                continue
            outs.append(_Out(
                oid=out.hash_info.value,
                hash_name=LEGACY if out.hash_info.name in LEGACY_HASH_NAMES else MD5,
                path=Path(os.path.relpath(out.fs_path, root)).as_posix(),
                stage=address,
                recorded_in=recorded_in,
                producible=pipeline and bool(stage.cmd) and not stage.frozen,
                order=order.get(stage, len(order)),
            ))
        for dep in stage.deps:  # a directory dependency's listing may sit in the cache; its files never do
            hash_info = getattr(dep, "hash_info", None)
            value = getattr(hash_info, "value", None)  # params dependencies hold a dict here
            if isinstance(value, str) and value.endswith(".dir") and hasattr(dep, "fs_path"):
                outs.append(_Out(oid=value, hash_name=MD5,
                                 path=Path(os.path.relpath(dep.fs_path, root)).as_posix(), stage=address,
                                 recorded_in=recorded_in, producible=False, order=order.get(stage, len(order)),
                                 role="dep"))
    return _RepoInfo(
        root=root,
        cache_root=Path(repo.cache.local_cache_dir),
        files_dir=Path(repo.cache.local.path),
        cache_types=list(repo.cache.local.cache_types),
        remotes=remotes,
        outs=outs,
        warnings=warnings,
    )


Key = tuple[str, str]  # (hash name, oid)


def _references(info: _RepoInfo, listings: dict[Key, list[tuple[str, str]]]) -> dict[Key, list[Reference]]:
    """(hash name, oid) -> the workspace outputs using it, files inside directory outputs included."""
    refs: dict[tuple[str, str], list[Reference]] = {}
    for out in info.outs:
        if out.role == "dep":  # DVC has written such listings to either location
            if any(r.path == out.path for r in refs.get((MD5, out.oid), [])):
                continue  # the same directory is a dependency of many stages: name it once
            for hash_name in (MD5, LEGACY):
                refs.setdefault((hash_name, out.oid), []).append(Reference(
                    path=out.path, out=out.path, stage=out.stage, recorded_in=out.recorded_in, producible=False,
                    role="dep"))
            continue
        common = dict(out=out.path, stage=out.stage, recorded_in=out.recorded_in, producible=out.producible)
        refs.setdefault((out.hash_name, out.oid), []).append(Reference(path=out.path, **common))
        for relpath, md5 in listings.get((out.hash_name, out.oid), []):
            refs.setdefault((out.hash_name, md5), []).append(
                Reference(path=f"{out.path}/{relpath}", in_dir=out.oid, **common))
    return refs


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------

@dataclass
class _Object:
    oid: str
    hash_name: str
    path: Path
    size: int


@dataclass
class _Scan:
    objects: list[_Object] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def _count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path)) if path.is_dir() else 0


def _list_objects(info: _RepoInfo) -> _Scan:
    scan = _Scan(skipped={"run-cache entries (not content-addressed)": 0, "temporary files": 0,
                          "unrecognised files": 0, "fs-cache entries": 0})

    def prefix_dir(directory: Path, hash_name: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.is_file() and _REST.match(entry.name):
                scan.objects.append(_Object(directory.name + entry.name, hash_name, Path(entry.path),
                                            entry.stat().st_size))
            elif entry.name.endswith(".tmp"):
                scan.skipped["temporary files"] += 1
            else:
                scan.skipped["unrecognised files"] += 1 if entry.is_file() else _count_files(Path(entry.path))

    if info.files_dir.is_dir():
        for entry in sorted(os.scandir(info.files_dir), key=lambda e: e.name):
            if entry.is_dir() and _PREFIX.match(entry.name):
                prefix_dir(Path(entry.path), MD5)
            else:
                scan.skipped["unrecognised files"] += 1 if entry.is_file() else _count_files(Path(entry.path))
    if info.cache_root.is_dir():
        for entry in sorted(os.scandir(info.cache_root), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_dir() and _PREFIX.match(entry.name):
                prefix_dir(path, LEGACY)
            elif entry.name == "runs":
                scan.skipped["run-cache entries (not content-addressed)"] += _count_files(path)
            elif entry.name == "fs":
                scan.skipped["fs-cache entries"] += _count_files(path)
            elif entry.name == "files":
                for sub in os.scandir(path):  # other hash algorithms than md5: not DVC 3's
                    if sub.name != MD5:
                        scan.skipped["unrecognised files"] += _count_files(Path(sub.path)) if sub.is_dir() else 1
            elif entry.name != QUARANTINE_DIR:
                scan.skipped["unrecognised files"] += 1 if entry.is_file() else _count_files(path)
    return scan


class _Progress:
    """tqdm on a terminal; otherwise one log line every ``every`` objects (and at the end)."""

    def __init__(self, total: int, total_bytes: int, log: Log, every: int) -> None:
        self.total, self.done, self.bytes, self.log, self.every = total, 0, 0, log, every
        self.bar = None
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="verifying DVC cache", leave=False)
        elif total >= every:
            log(f"verifying {total} cache objects ({total_bytes / 2**20:.1f} MiB)")

    def update(self, size: int) -> None:
        self.done += 1
        self.bytes += size
        if self.bar is not None:
            self.bar.update(size)
        elif self.done % self.every == 0 and self.done < self.total:
            self.log(f"  {self.done}/{self.total} objects, {self.bytes / 2**20:.1f} MiB")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.total >= self.every:
            self.log(f"  {self.done}/{self.total} objects, {self.bytes / 2**20:.1f} MiB: done")


def _check_object(obj: _Object) -> tuple[str | None, str | None, list[tuple[str, str]] | None]:
    """(problem kind or None, detail/actual hash, parsed listing for good .dir objects)."""
    try:
        ok, actual = matches(obj.path, obj.oid, obj.hash_name)
    except OSError as exc:
        return "unreadable", f"could not read: {exc}", None
    if not ok:
        return "corrupt", actual, None
    if obj.oid.endswith(".dir"):
        try:
            return None, actual, parse_listing(obj.path)
        except (ValueError, UnicodeDecodeError) as exc:
            return "bad-listing", f"hash matches but it is not a DVC directory listing: {exc}", None
    return None, actual, None


@dataclass
class _Verified:
    scan: _Scan
    bad: list[tuple[_Object, str, str]]                         # (object, problem, detail/actual)
    listings: dict[tuple[str, str], list[tuple[str, str]]]     # good .dir objects
    present: set[tuple[str, str]]                               # (hash name, oid) of good objects
    bytes: int
    seconds: float


def _verify_all(info: _RepoInfo, jobs: int, log: Log, progress_every: int) -> _Verified:
    start = time.monotonic()
    scan = _list_objects(info)
    progress = _Progress(len(scan.objects), sum(o.size for o in scan.objects), log, progress_every)
    bad, listings, present = [], {}, set()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # hashlib releases the GIL
        for obj, (problem, detail, listing) in zip(scan.objects, pool.map(_check_object, scan.objects)):
            progress.update(obj.size)
            if problem:
                bad.append((obj, problem, detail))
            else:
                present.add((obj.hash_name, obj.oid))
                if listing is not None:
                    listings[(obj.hash_name, obj.oid)] = listing
    progress.close()
    return _Verified(scan, bad, listings, present, sum(o.size for o in scan.objects), time.monotonic() - start)


# --------------------------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------------------------

def _object_path(info: _RepoInfo, oid: str, hash_name: str) -> Path:
    base = info.files_dir if hash_name == MD5 else info.cache_root
    return base / oid[:2] / oid[2:]


def _quarantine_name(oid: str, hash_name: str) -> str:
    return oid if hash_name == MD5 else f"{oid}.{LEGACY}"


def _quarantine(info: _RepoInfo, path: Path, oid: str, hash_name: str, reason: str, actual: str | None,
                suffix: str = "") -> Path:
    """Move a bad object out of DVC's way (DVC then sees it as missing) and log it."""
    qdir = info.cache_root / QUARANTINE_DIR
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / (_quarantine_name(oid, hash_name) + suffix)
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = qdir / f"{_quarantine_name(oid, hash_name)}{suffix}.{n}"
    size = path.lstat().st_size
    os.replace(path, target)
    with open(qdir / MANIFEST, "a", encoding="utf-8") as manifest:
        manifest.write(json.dumps({
            "oid": oid, "hash": hash_name, "from": str(path), "to": str(target), "size": size,
            "actual": actual, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }) + "\n")
    return target


def _quarantined_earlier(info: _RepoInfo) -> dict[tuple[str, str], dict[str, Any]]:
    """(hash name, oid) -> manifest entry (last one), for objects quarantined by earlier runs."""
    manifest = info.cache_root / QUARANTINE_DIR / MANIFEST
    held = {}
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                held[(entry["hash"], entry["oid"])] = entry
            except (ValueError, KeyError):
                continue
    return held


def _quarantine_count(info: _RepoInfo) -> int:
    qdir = info.cache_root / QUARANTINE_DIR
    return sum(1 for p in qdir.iterdir() if p.name != MANIFEST) if qdir.is_dir() else 0


# --------------------------------------------------------------------------------------------
# Repair
# --------------------------------------------------------------------------------------------

def _tmp_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent / f"{dest.name}.{secrets.token_urlsafe(8)}.tmp"  # DVC's own temp-name pattern


def _install(tmp: Path, dest: Path) -> None:
    os.chmod(tmp, 0o444)  # DVC keeps cache objects read-only
    os.replace(tmp, dest)


def _restore_from_remote(repo, info: _RepoInfo, problem: Problem) -> bool:
    dest = Path(problem.cache_path)
    for name in info.remotes:
        tmp = None
        try:
            odb = repo.cloud.get_remote_odb(name, hash_name=problem.hash_name)
            remote_path = odb.oid_to_path(problem.oid)
            if not odb.fs.exists(remote_path):
                problem.notes.append(f"remote {name}: does not have it")
                continue
            tmp = _tmp_beside(dest)
            odb.fs.get_file(remote_path, str(tmp))
        except Exception as exc:  # noqa: BLE001 - any remote error: note it and try the next way
            problem.notes.append(f"remote {name}: {type(exc).__name__}: {exc}")
            if tmp is not None and tmp.exists():
                tmp.unlink()
            continue
        ok, actual = matches(tmp, problem.oid, problem.hash_name)
        if ok:
            _install(tmp, dest)
            problem.outcome, problem.repaired_by = "restored", f"remote {name}"
            return True
        bad_copy = _quarantine(info, tmp, problem.oid, problem.hash_name, f"remote {name} copy is corrupt too",
                               actual, suffix=f".remote-{name}")
        problem.notes.append(f"remote {name}: its copy is corrupt too (md5 {actual}); kept at {bad_copy}")
    return False


def _workspace_listing(directory: Path, hash_name: str) -> bytes:
    entries = []
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = Path(dirpath, name)
            entries.append((path.relative_to(directory).as_posix(), object_hash(path, hash_name)))
    return listing_bytes(entries)


def _restore_from_workspace(info: _RepoInfo, problem: Problem) -> bool:
    dest = Path(problem.cache_path)
    is_dir = problem.oid.endswith(".dir")
    for ref in problem.references:
        path = info.root / ref.path
        try:
            if is_dir:
                if ref.in_dir or not path.is_dir():
                    continue
                names = [MD5] if problem.hash_name == MD5 else [LEGACY, MD5]  # DVC 3 puts some listings there
                for data in (_workspace_listing(path, name) for name in names):
                    if hashlib.md5(data, usedforsecurity=False).hexdigest() + ".dir" == problem.oid:
                        break
                else:
                    problem.notes.append(f"workspace {ref.path}/: its files no longer hash to this listing")
                    continue
                tmp = _tmp_beside(dest)
                tmp.write_bytes(data)
            else:
                if not path.is_file():  # gone, or a symlink to the quarantined object
                    continue
                ok, actual = matches(path, problem.oid, problem.hash_name)
                if not ok:
                    link = " (a link to the bad object?)" if path.is_symlink() or path.stat().st_nlink > 1 else ""
                    problem.notes.append(f"workspace {ref.path}: differs too (md5 {actual}){link}")
                    continue
                tmp = _tmp_beside(dest)
                shutil.copyfile(path, tmp)  # a copy, never a link: the workspace file may change later
        except OSError as exc:
            problem.notes.append(f"workspace {ref.path}: {exc}")
            continue
        if matches(tmp, problem.oid, problem.hash_name)[0]:  # re-check what landed in the cache
            _install(tmp, dest)
            problem.outcome, problem.repaired_by = "restored", f"workspace {ref.path}"
            return True
        tmp.unlink()
    return False


def _rerun_stage(root: Path, stage: str, log: Log) -> tuple[bool, str]:
    command, env = venv_dvc("repro", "--force", "--single-item", stage)
    log(f"repair: dvc {' '.join(command[1:])}")
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output


def _hint(problem: Problem, info: _RepoInfo) -> str:
    if problem.object_ok:  # only the workspace is left
        outs = sorted({r.out for r in problem.references if r.path in problem.workspace_bad})
        return "; ".join(f"dvc checkout --relink {o}" for o in outs)
    producible = sorted({r.stage for r in problem.references if r.producible})
    if producible:
        return "; ".join(f"dvc repro --force --single-item {s}" for s in producible)
    added = sorted({r.out for r in problem.references})
    if added:
        return ("restore the original data (e.g. `dvc pull` from a remote that has it, or copy it back) and "
                + "; ".join(f"dvc add {a}" for a in added))
    return ("not used by the current workspace (an older revision's data): `dvc fetch --all-commits` from a "
            "remote that has it, or accept the loss (the bad copy stays in quarantine)")


# --------------------------------------------------------------------------------------------
# The whole check
# --------------------------------------------------------------------------------------------

def verify_cache(repo_root: Path | str = DEFAULT_REPO, repair: bool = False, *, dry_run: bool = False,
                 strict: bool = False, jobs: int | None = None, log: Log = _stderr,
                 progress_every: int = 1000, repo: Repo | None = None) -> CacheReport:
    """Re-hash the repo's DVC cache, quarantine bad objects and, with ``repair``, restore them.

    ``dry_run`` only reports (nothing is moved or repaired). ``strict`` also fails on objects
    that are referenced but missing (normal after a partial ``dvc pull``; not corruption).
    ``repo``, an open ``Repo`` of ``repo_root``, is used instead of opening another: a caller
    holding its lock then checks the cache and reads DVC's status under one lock and one parse of
    ``dvc.yaml``/``dvc.lock`` (with ``dry_run`` only: a repair runs ``dvc``, which needs the lock).
    """
    from dvc.repo import Repo, lock_repo

    jobs = jobs or min(4, os.cpu_count() or 1)
    repair = repair and not dry_run
    with nullcontext(repo) if repo is not None else Repo(str(repo_root)) as repo:
        info = _repo_info(repo)
        report = CacheReport(repo=str(info.root), cache_dir=str(info.files_dir), repair=repair, dry_run=dry_run,
                             strict=strict, quarantine_dir=str(info.cache_root / QUARANTINE_DIR),
                             cache_types=info.cache_types, remotes=info.remotes, warnings=list(info.warnings))
        with lock_repo(repo):  # no other DVC command writes the cache while objects move
            verified = _verify_all(info, jobs, log, progress_every)
            report.objects_checked = len(verified.scan.objects)
            report.dir_objects = sum(o.oid.endswith(".dir") for o in verified.scan.objects)
            report.legacy_objects = sum(o.hash_name == LEGACY for o in verified.scan.objects)
            report.bytes_checked, report.seconds = verified.bytes, verified.seconds
            report.skipped = verified.scan.skipped
            refs = _references(info, verified.listings)

            for obj, found, detail in verified.bad:
                problem = Problem(
                    oid=obj.oid, hash_name=obj.hash_name, cache_path=str(obj.path), found=found, size=obj.size,
                    actual=detail if found == "corrupt" else None,
                    detail=(f"bytes hash to {detail} ({obj.hash_name}), not to the object's name"
                            if found == "corrupt" else detail),
                    references=refs.get((obj.hash_name, obj.oid), []),
                )
                problem.workspace_bad = _bad_workspace_copies(info, problem)
                if dry_run:
                    problem.outcome = "left in place"
                else:
                    try:
                        problem.quarantined_to = str(_quarantine(info, obj.path, obj.oid, obj.hash_name, found,
                                                                 problem.actual))
                    except OSError as exc:  # e.g. a read-only shared cache: report, do not crash
                        problem.notes.append(f"could not quarantine it: {exc}")
                report.problems.append(problem)
            bad_keys = {(p.hash_name, p.oid) for p in report.problems}
            for key, entry in _quarantined_earlier(info).items():
                if (key in verified.present or key in bad_keys
                        or not any(r.role == "out" for r in refs.get(key, []))):
                    continue  # back in the cache, already counted, or no output needs it any more
                hash_name, oid = key
                problem = Problem(
                    oid=oid, hash_name=hash_name, cache_path=str(_object_path(info, oid, hash_name)),
                    found="quarantined-earlier", detail="quarantined by an earlier check and still missing",
                    quarantined_to=entry["to"], actual=entry.get("actual"), size=entry.get("size"),
                    references=refs[key],
                )
                problem.workspace_bad = _bad_workspace_copies(info, problem)
                report.problems.append(problem)
            report.missing = _missing(info, verified, refs, {(p.hash_name, p.oid) for p in report.problems})

            if repair:
                for problem in report.problems:
                    _restore_from_remote(repo, info, problem) or _restore_from_workspace(info, problem)
            for problem in report.problems:
                if not dry_run and not problem.object_ok and problem.references and all(
                        r.role == "dep" for r in problem.references):
                    problem.outcome = "not needed"
                    problem.notes.append("only a dependency's listing: DVC re-hashes the directory when it needs it")

    if repair and any(not p.object_ok for p in report.problems):
        _repair_by_rerun(info, report, log)
    if repair and any(p.workspace_bad for p in report.problems):
        _fix_workspace(info, report, log)
    if repair and report.problems:
        _reverify(report, repo_root, jobs, log, progress_every)
    for problem in report.problems:
        if not problem.resolved:
            problem.hint = _hint(problem, info)
    report.quarantine_held = _quarantine_count(info)
    return report


def _missing(info: _RepoInfo, verified: _Verified, refs, bad: set[tuple[str, str]]) -> list[Missing]:
    """Objects that workspace outputs (or their listings) name but the cache lacks (not counted as bad).

    Only listings of the current outputs are followed: a dependency's listing names files DVC never
    caches, and a listing no workspace output uses may be an old revision's dependency.
    """
    missing: dict[tuple[str, str], Missing] = {}
    outs = [out for out in info.outs if out.role == "out"]
    for out in outs:  # listings of cached outputs: every file must be there too
        for relpath, md5 in verified.listings.get((out.hash_name, out.oid), []):
            key = (out.hash_name, md5)
            if key not in verified.present and key not in bad and key not in missing:
                missing[key] = Missing(md5, out.hash_name, f"{out.oid} ({out.path}/{relpath})")
    for out in outs:
        key = (out.hash_name, out.oid)
        if key not in verified.present and key not in bad and key not in missing:
            missing[key] = Missing(out.oid, out.hash_name, f"{out.recorded_in}: {out.path}")
    return sorted(missing.values(), key=lambda m: m.listed_by)


def _holds_bad_bytes(info: _RepoInfo, problem: Problem, rel_path: str) -> bool:
    path = info.root / rel_path
    try:
        if path.is_symlink() and not path.exists():  # cache type symlink: the object was moved away
            return os.readlink(path) == problem.cache_path
        return bool(path.is_file() and problem.actual
                    and object_hash(path, problem.hash_name) == problem.actual)
    except OSError:
        return False


def _bad_workspace_copies(info: _RepoInfo, problem: Problem) -> list[str]:
    """Workspace files that hold the bad object's bytes (or are links to the moved object)."""
    if problem.oid.endswith(".dir"):
        return []  # a listing is never checked out as such; its files have their own objects
    return [ref.path for ref in problem.references if _holds_bad_bytes(info, problem, ref.path)]


def _fix_workspace(info: _RepoInfo, report: CacheReport, log: Log) -> None:
    """Put the restored objects' bytes back where ``dvc checkout`` had copied the bad ones.

    DVC's state database remembers the workspace files as unchanged, so a plain ``dvc checkout``
    leaves them alone; ``--relink`` rewrites them from the (now good) cache and, without
    ``--force``, still refuses to touch files with unsaved user changes.
    """
    def still_bad(problem: Problem, path: str) -> bool:
        return _holds_bad_bytes(info, problem, path) or not (info.root / path).is_file()

    todo = [p for p in report.problems if p.object_ok]
    for problem in todo:  # a stage rerun has already rewritten its outputs
        problem.workspace_fixed = [path for path in problem.workspace_bad if not still_bad(problem, path)]
    outs = sorted({r.out for p in todo for r in p.references
                   if r.path in p.workspace_bad and r.path not in p.workspace_fixed})
    for out in outs:
        log(f"repair: dvc checkout --relink {out}")
        command, env = venv_dvc("checkout", "--relink", out)
        result = subprocess.run(command, cwd=info.root, env=env,
                                capture_output=True, text=True)
        for problem in todo:
            for ref in problem.references:
                if ref.out != out or ref.path not in problem.workspace_bad or ref.path in problem.workspace_fixed:
                    continue
                if not still_bad(problem, ref.path):
                    problem.workspace_fixed.append(ref.path)
                elif result.returncode != 0:
                    problem.notes.append(f"`dvc checkout --relink {out}` failed: "
                                         f"{(result.stdout + result.stderr).strip()[-300:]}")


def _repair_by_rerun(info: _RepoInfo, report: CacheReport, log: Log) -> None:
    """(c) Rerun the producing stages (upstream first), then check what they wrote."""
    from dvc.repo import Repo

    order = {out.stage: out.order for out in info.outs}
    pending = [p for p in report.problems if not p.object_ok]
    stages = sorted({r.stage for p in pending for r in p.references if r.producible}, key=lambda s: (order[s], s))
    ran: dict[str, tuple[bool, str]] = {}
    for stage in stages:
        if all(p.object_ok for p in pending):
            break
        ok, output = ran[stage] = _rerun_stage(info.root, stage, log)
        for problem in pending:
            if problem.object_ok or stage not in {r.stage for r in problem.references}:
                continue
            if not ok:
                problem.notes.append(f"`dvc repro --force --single-item {stage}` failed: {output[-300:]}")
                continue
            path = Path(problem.cache_path)
            if path.is_file() and matches(path, problem.oid, problem.hash_name)[0]:
                problem.outcome, problem.repaired_by = "restored", f"stage {stage}"
    # A rerun that produced different bytes records a new hash: the old object is no longer needed
    # by the workspace (dvc.lock changed; git diff shows it), but it is gone from the cache.
    if ran:
        with Repo(str(info.root)) as repo:
            now = {(o.hash_name, o.oid) for o in _repo_info(repo).outs}
        for problem in pending:
            if problem.object_ok or not any(r.stage in ran and ran[r.stage][0] for r in problem.references):
                continue
            # Each user is the output itself or the directory output listing it; all re-recorded?
            gone = [r for r in problem.references if r.role == "out"
                    and (problem.hash_name, r.in_dir or problem.oid) not in now]
            if gone and len(gone) == sum(r.role == "out" for r in problem.references):
                first = gone[0]
                problem.outcome, problem.repaired_by = "superseded", f"stage {first.stage}"
                problem.notes.append(
                    f"the rerun wrote different content: {first.recorded_in} now records a new hash for "
                    f"{first.out}; commit it (and rerun downstream stages) - the old object is lost")
                report.warnings.append(f"{first.recorded_in} changed: stage {first.stage} is not deterministic; "
                                       "`dvc status` shows what to rerun, `git diff` what changed")
            else:
                problem.notes.append("the stage rerun did not write this object again")


def _reverify(report: CacheReport, repo_root: Path | str, jobs: int, log: Log, progress_every: int) -> None:
    """After repairs, hash the whole cache again; anything bad now is quarantined and left unrepaired."""
    from dvc.repo import Repo, lock_repo

    with Repo(str(repo_root)) as repo:
        info = _repo_info(repo)
        with lock_repo(repo):
            verified = _verify_all(info, jobs, log, progress_every)
            refs = _references(info, verified.listings)
            known = {(p.hash_name, p.oid): p for p in report.problems}
            for obj, found, detail in verified.bad:
                qpath = _quarantine(info, obj.path, obj.oid, obj.hash_name, found, detail)
                problem = known.get((obj.hash_name, obj.oid))
                if problem is None:
                    problem = Problem(oid=obj.oid, hash_name=obj.hash_name, cache_path=str(obj.path), found=found,
                                      detail=f"found bad when re-verifying after repair: {detail}", size=obj.size,
                                      references=refs.get((obj.hash_name, obj.oid), []))
                    report.problems.append(problem)
                problem.outcome, problem.repaired_by, problem.quarantined_to = "not repaired", None, str(qpath)
                problem.notes.append("bad again when re-verified")
            for problem in report.problems:
                key = (problem.hash_name, problem.oid)
                if problem.outcome == "restored" and key not in verified.present:
                    problem.outcome, problem.repaired_by = "not repaired", None
                    problem.notes.append("missing from the cache when re-verified")
            report.missing = _missing(info, verified, refs, {(p.hash_name, p.oid) for p in report.problems
                                                             if not p.object_ok})
    report.reverified_objects = len(verified.scan.objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cache_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=DEFAULT_REPO, help="DVC repository root (default: this one)")
    parser.add_argument("--repair", action="store_true",
                        help="restore bad objects: from a remote, the workspace copy, or by rerunning their stage")
    parser.add_argument("--json", type=Path, metavar="REPORT", help="also write the report as JSON here")
    parser.add_argument("--dry-run", action="store_true", help="only report: move and repair nothing")
    parser.add_argument("--strict", action="store_true", help="also fail on referenced objects missing from the cache")
    parser.add_argument("--jobs", type=int, default=None, help="hashing threads (default: up to 4)")
    args = parser.parse_args(argv)
    from dvc.exceptions import DvcException, NotDvcRepoError

    try:
        report = verify_cache(args.repo, repair=args.repair, dry_run=args.dry_run, strict=args.strict, jobs=args.jobs)
    except (NotDvcRepoError, DvcException, RuntimeError) as exc:  # LockError is a DvcException
        print(f"cache check could not run: {exc}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - exit 1 means "not clean"; a crash must not look like that
        import traceback

        traceback.print_exc()
        return 2
    print(report.summary())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
