"""``python -m pipeline.cache_check`` on tiny real DVC repositories (real ``dvc``, no mocks).

Why the command exists: DVC trusts a read-only cache object's bytes. ``dvc status`` stays
"up to date" and ``dvc checkout`` copies rotten bytes back into the workspace
(``test_dvc_alone_does_not_notice_and_the_check_does``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cache_check import LEGACY, main, verify_cache
from tests.smoke import commit, dvc

ONE = b"one - a single small output file of the test stage\n"
A = b"alpha - the first file inside the directory output\n"
B = b"bravo - the second file inside the directory output\n"
RAW = b"raw - data added with dvc add, no stage produces it\n"
DVC_YAML = f"""\
stages:
  make:
    cmd: mkdir -p out && printf '{A.decode().strip()}\\n' > out/a.txt && printf '{B.decode().strip()}\\n' > out/b.txt
      && printf '{ONE.decode().strip()}\\n' > one.txt
    deps:
      - raw.txt
    outs:
      - out
      - one.txt
"""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cache_object(root: Path, oid: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]


def flip(path: Path, count: int = 16, at: int = 0) -> None:
    """Bit rot: 16 bytes inverted in place, the object left read-only as DVC keeps it.

    (A writable corrupt object would be re-hashed - and silently deleted - by DVC's own
    ``LocalHashFileDB.check``; a read-only one, the normal case, is trusted.)
    """
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    for i in range(at, at + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)


def dir_oid(root: Path) -> str:
    lock = (root / "dvc.lock").read_text()
    return next(line.split()[-1] for line in lock.splitlines() if line.strip().endswith(".dir"))


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """git + DVC repo: stage ``make`` (outputs ``out/`` with two files, ``one.txt``), ``raw.txt`` added."""
    root = tmp_path_factory.mktemp("cache_check") / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "raw.txt").write_bytes(RAW)
    dvc(root, "add", "-q", "raw.txt")
    dvc(root, "repro", "-q")
    commit(root, "tiny pipeline")
    assert (root / "one.txt").read_bytes() == ONE and (root / "out" / "a.txt").read_bytes() == A
    return root


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    shutil.copytree(template, target, symlinks=True)
    return target


def test_clean_cache_passes(repo, tmp_path):
    report = verify_cache(repo, log=quiet)
    assert report.clean and report.exit_code == 0 and report.problems == [] and report.missing == []
    assert report.objects_checked == 5 and report.dir_objects == 1  # one.txt, a.txt, b.txt, out's .dir, raw.txt
    objects = [p for p in (repo / ".dvc/cache/files/md5").rglob("*") if p.is_file()]
    assert report.bytes_checked == sum(p.stat().st_size for p in objects)
    assert report.cache_dir == str(repo / ".dvc" / "cache" / "files" / "md5")  # from DVC's own Repo.cache.local
    assert "Result: CLEAN (exit 0)" in report.summary()

    out = tmp_path / "report.json"
    assert main(["--repo", str(repo), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["clean"] and data["objects_checked"] == 5 and data["bad"] == 0

    lines: list[str] = []  # not a terminal: plain progress lines every N objects
    verify_cache(repo, log=lines.append, progress_every=2)
    assert lines[0].startswith("verifying 5 cache objects") and lines[-1].endswith("done") and len(lines) == 4


def test_dvc_alone_does_not_notice_and_the_check_does(repo, tmp_path):
    oid = md5(ONE)
    flip(cache_object(repo, oid))
    # What DVC says: nothing. A fresh checkout even copies the rotten bytes into the workspace.
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    (repo / "one.txt").unlink()
    dvc(repo, "checkout")
    assert (repo / "one.txt").read_bytes() != ONE
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout

    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pipeline.cache_check", "--repo", str(repo), "--json", str(out)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "one.txt (stage make, dvc.lock)" in result.stdout and "NOT CLEAN (exit 1)" in result.stdout
    [problem] = json.loads(out.read_text())["problems"]
    assert problem["oid"] == oid and problem["found"] == "corrupt" and problem["outcome"] == "not repaired"
    users = [(r["path"], r["stage"], r["recorded_in"]) for r in problem["references"]]
    assert users == [("one.txt", "make", "dvc.lock")]
    assert problem["workspace_bad"] == ["one.txt"]  # the checkout above copied the bad bytes
    assert "dvc repro --force --single-item make" in problem["hint"]

    # Quarantined, not deleted: DVC now sees the object as missing instead of trusting it.
    quarantined = repo / ".dvc" / "cache" / "quarantine" / oid
    assert problem["quarantined_to"] == str(quarantined) and md5(quarantined.read_bytes()) == problem["actual"]
    assert not cache_object(repo, oid).exists()
    assert "not in cache" in dvc(repo, "status").stdout
    # A later check still fails until the object is repaired.
    assert verify_cache(repo, log=quiet).exit_code == 1


def test_repair_restores_from_a_dvc_remote(repo, tmp_path):
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    dvc(repo, "push", "-q")
    oid = md5(A)  # a file inside the directory output
    flip(cache_object(repo, oid), at=4)

    report = verify_cache(repo, repair=True, log=quiet)
    [problem] = report.problems
    assert [r.path for r in problem.references] == ["out/a.txt"] and problem.references[0].out == "out"
    assert problem.outcome == "restored" and problem.repaired_by == "remote store"
    assert md5(cache_object(repo, oid).read_bytes()) == oid and report.clean and report.exit_code == 0
    assert oct(cache_object(repo, oid).stat().st_mode & 0o777) == "0o444"  # read-only, like DVC's own objects
    assert report.reverified_objects == 5 and "remote: 1" in report.summary()
    assert (repo / ".dvc/cache/quarantine" / oid).exists()  # the bad copy is kept

    # The remote's copy is hash-checked too: a rotten one is kept aside and the stage rerun instead.
    oid = md5(ONE)
    for path in (cache_object(repo, oid), tmp_path / "remote" / "files" / "md5" / oid[:2] / oid[2:]):
        flip(path)
    (repo / "one.txt").unlink()
    report = verify_cache(repo, repair=True, log=quiet)
    [problem] = report.problems
    assert any(note.startswith("remote store: its copy is corrupt too") for note in problem.notes)
    assert problem.repaired_by == "stage make" and report.clean
    assert (repo / ".dvc/cache/quarantine" / f"{oid}.remote-store").exists()


def test_repair_reruns_the_stage_when_no_remote_and_no_workspace_copy(repo):
    oid = md5(ONE)
    flip(cache_object(repo, oid))
    (repo / "one.txt").unlink()
    first = verify_cache(repo, log=quiet)  # verify only: quarantines, exit 1
    assert first.exit_code == 1 and first.problems[0].outcome == "not repaired"

    report = verify_cache(repo, repair=True, log=quiet)  # picks up the quarantined object
    [problem] = report.problems
    assert problem.found == "quarantined-earlier"
    assert problem.outcome == "restored" and problem.repaired_by == "stage make"
    assert report.exit_code == 0
    assert md5(cache_object(repo, oid).read_bytes()) == oid and (repo / "one.txt").read_bytes() == ONE
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    assert verify_cache(repo, log=quiet).clean


def test_repair_uses_a_good_workspace_copy_but_not_a_hardlink_to_the_bad_object(repo):
    # Default cache type (copy): the workspace copy is independent and still good.
    oid = md5(B)
    flip(cache_object(repo, oid))
    report = verify_cache(repo, repair=True, log=quiet)
    assert report.problems[0].repaired_by == "workspace out/b.txt" and report.clean
    assert md5(cache_object(repo, oid).read_bytes()) == oid

    # Hardlinked workspace: the same inode rots with the object, so hashing rules it out.
    dvc(repo, "config", "cache.type", "hardlink")
    dvc(repo, "checkout", "--relink", "-q")
    assert (repo / "one.txt").stat().st_ino == cache_object(repo, md5(ONE)).stat().st_ino
    flip(cache_object(repo, md5(ONE)))
    report = verify_cache(repo, repair=True, log=quiet)
    [problem] = report.problems
    assert problem.workspace_bad == ["one.txt"]
    assert any("workspace one.txt: differs too" in note for note in problem.notes)
    assert problem.repaired_by == "stage make" and report.clean
    assert (repo / "one.txt").read_bytes() == ONE


def test_corrupt_dir_listing_is_caught_and_repaired(repo):
    oid = dir_oid(repo)
    listing = cache_object(repo, oid)
    text = listing.read_text()

    def rot_listing() -> None:  # still valid JSON, same size, every listed object exists
        os.chmod(listing, 0o644)
        listing.write_text(text.replace('"relpath": "a.txt"', '"relpath": "c.txt"'))
        os.chmod(listing, 0o444)

    # Workspace intact: the listing is rebuilt from the files and must hash to its name.
    rot_listing()
    report = verify_cache(repo, log=quiet)
    [problem] = report.problems
    assert problem.oid == oid and problem.found == "corrupt" and report.exit_code == 1
    assert [(r.path, r.stage) for r in problem.references] == [("out", "make")]
    repaired = verify_cache(repo, repair=True, log=quiet)
    assert repaired.problems[0].repaired_by == "workspace out" and repaired.clean
    assert listing.read_text() == text

    # DVC itself follows a rotten listing: status is quiet, checkout writes the wrong tree.
    rot_listing()
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    shutil.rmtree(repo / "out")
    dvc(repo, "checkout")
    assert sorted(p.name for p in (repo / "out").iterdir()) == ["b.txt", "c.txt"]
    # The workspace now matches the bad listing, so only rerunning the stage can rebuild it.
    repaired = verify_cache(repo, repair=True, log=quiet)
    assert repaired.problems[0].repaired_by == "stage make" and repaired.clean
    assert listing.read_text() == text
    assert sorted(p.name for p in (repo / "out").iterdir()) == ["a.txt", "b.txt"]


def test_listed_objects_must_exist(repo):
    missing = cache_object(repo, md5(B))
    missing.unlink()
    report = verify_cache(repo, log=quiet)
    assert [(m.oid, m.listed_by) for m in report.missing] == [(md5(B), f"{dir_oid(repo)} (out/b.txt)")]
    assert report.clean  # missing is not corruption (a partial `dvc pull` leaves the same)...
    assert verify_cache(repo, strict=True, log=quiet).exit_code == 1  # ...unless asked to be strict
    assert main(["--repo", str(repo), "--strict"]) == 1


def test_added_file_without_remote_or_workspace_copy_is_reported_unrepairable(repo):
    oid = md5(RAW)
    flip(cache_object(repo, oid))
    (repo / "raw.txt").unlink()
    report = verify_cache(repo, repair=True, log=quiet)
    [problem] = report.problems
    assert problem.references[0].recorded_in == "raw.txt.dvc" and not problem.references[0].producible
    assert problem.outcome == "not repaired" and "dvc add raw.txt" in problem.hint
    assert report.exit_code == 1 and "to repair: " in report.summary()
    assert (repo / ".dvc/cache/quarantine" / oid).exists()


def test_legacy_dvc2_objects_are_hashed_with_dos2unix(repo):
    crlf = b"a DVC 2 text file\r\nwith windows line endings\r\n"
    legacy_oid = md5(crlf.replace(b"\r\n", b"\n"))
    path = repo / ".dvc" / "cache" / legacy_oid[:2] / legacy_oid[2:]
    path.parent.mkdir()
    path.write_bytes(crlf)
    os.chmod(path, 0o444)
    report = verify_cache(repo, log=quiet)
    assert report.legacy_objects == 1 and report.clean

    flip(path, count=4, at=2)
    report = verify_cache(repo, log=quiet)
    assert [(p.oid, p.hash_name) for p in report.problems] == [(legacy_oid, LEGACY)] and report.exit_code == 1
    assert (repo / ".dvc/cache/quarantine" / f"{legacy_oid}.{LEGACY}").exists()


def test_dry_run_moves_nothing_and_run_cache_is_skipped(repo):
    runs = repo / ".dvc" / "cache" / "runs"
    assert runs.is_dir()  # `dvc repro` filled DVC's run cache
    oid = md5(ONE)
    flip(cache_object(repo, oid))
    report = verify_cache(repo, dry_run=True, log=quiet)
    assert report.problems[0].outcome == "left in place" and report.exit_code == 1
    assert cache_object(repo, oid).exists() and not (repo / ".dvc/cache/quarantine").exists()
    assert report.skipped["run-cache entries (not content-addressed)"] == sum(1 for p in runs.rglob("*") if p.is_file())

