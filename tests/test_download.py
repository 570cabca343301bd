"""Tests for curriculum.download against a local HTTP server (127.0.0.1 only).

The one exception is the fetch_pypi_file test, which runs a real ``pip download`` of a tiny
wheel from the configured package index.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from curriculum import download as dl
from curriculum.projects import image_classification
from curriculum.download import (
    DownloadError,
    RemoteFile,
    TransientDownloadError,
    download,
    fetch_pypi_file,
    read_archive_member,
    safe_extract_tar,
    verify_file,
)

PAYLOAD = bytes(range(256)) * 400  # 100 KiB, several chunks at chunk_size=4096
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` except under ``/norange/``.

    Paths under ``/truncated/`` announce twice the body's length, send the body and close;
    paths under ``/stall/`` send half the body and then nothing until the client times out.
    ``server.plans[path]`` lists how to answer that path's next requests first: an HTTP status
    (an error page) or ``"drop"`` (close the connection without answering).
    """

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if plan := server.plans.get(self.path):
            action = plan.pop(0)
            if action == "drop":
                self.close_connection = True
            else:
                self.send_error(action)
            return
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", str(2 * len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        if self.path.startswith("/stall/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(1)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not self.path.startswith("/norange/"):
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.plans = {}, [], {}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def dirs(tmp_path):
    return tmp_path / "data", tmp_path / "partial"


def _remote(server, path: str, **pins) -> RemoteFile:
    pins = pins or {"sha256": PAYLOAD_SHA256, "size": len(PAYLOAD)}
    return RemoteFile(url=server.url + path, filename="payload.bin", **pins)


def _get(remote, dirs, **kwargs) -> Path:
    return download(remote, *dirs, chunk_size=4096, timeout=5, progress=False, **kwargs)


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# --- RemoteFile ---------------------------------------------------------------------------


def test_remote_file_requires_a_checksum_and_a_plain_name():
    with pytest.raises(ValueError, match="sha256 or md5"):
        RemoteFile(url="https://example.org/a.csv", filename="a.csv")
    with pytest.raises(ValueError, match="plain file name"):
        RemoteFile(url="https://example.org/a.csv", filename="../a.csv", md5="0" * 32)
    with pytest.raises(ValueError, match="hex digest"):
        RemoteFile(url="https://example.org/a.csv", filename="a.csv", sha256="abc")
    with pytest.raises(ValueError, match="http"):
        RemoteFile(url="file:///etc/passwd", filename="passwd", md5="0" * 32)
    pinned = RemoteFile(url="https://example.org/a.csv", filename="a.csv", md5="AB" * 16)
    assert pinned.md5 == "ab" * 16


# --- download -----------------------------------------------------------------------------


def test_good_download_lands_verified_and_leaves_no_part(server, dirs):
    server.files["/f"] = PAYLOAD
    remote = _remote(server, "/f", sha256=PAYLOAD_SHA256, md5=PAYLOAD_MD5, size=len(PAYLOAD))
    path = _get(remote, dirs)
    assert path == dirs[0] / "payload.bin"
    assert path.read_bytes() == PAYLOAD
    assert _listing(dirs[0]) == ["payload.bin"]
    assert _listing(dirs[1]) == []
    assert server.requests == [("/f", None)]


def test_checksum_mismatch_names_both_digests_and_leaves_nothing(server, dirs):
    served = PAYLOAD[:-1] + b"X"
    server.files["/f"] = served
    with pytest.raises(DownloadError) as excinfo:
        _get(_remote(server, "/f"), dirs)
    message = str(excinfo.value)
    assert "sha256 mismatch" in message
    assert PAYLOAD_SHA256 in message
    assert hashlib.sha256(served).hexdigest() in message
    assert _listing(dirs[0]) == []
    assert _listing(dirs[1]) == []  # a complete but wrong file is not worth resuming
    assert not excinfo.value.transient  # the same bytes would fail again: permanent


def test_md5_only_pin_is_checked(server, dirs):
    server.files["/f"] = PAYLOAD
    with pytest.raises(DownloadError, match=f"md5 mismatch: expected {'0' * 32}, got {PAYLOAD_MD5}"):
        _get(_remote(server, "/f", md5="0" * 32), dirs)
    assert _get(_remote(server, "/f", md5=PAYLOAD_MD5), dirs).read_bytes() == PAYLOAD


def test_truncated_download_keeps_part_and_a_retry_resumes(server, dirs):
    half = PAYLOAD[: len(PAYLOAD) // 2]
    server.files["/truncated/f"] = half
    server.files["/f"] = PAYLOAD
    # Without a pinned size, the short body is caught from the Content-Length header alone.
    with pytest.raises(TransientDownloadError, match=rf"truncated: got {len(half)} of {2 * len(half)} bytes"):
        _get(_remote(server, "/truncated/f", sha256=PAYLOAD_SHA256), dirs)
    assert _listing(dirs[0]) == []
    assert (dirs[1] / "payload.bin.part").read_bytes() == half

    path = _get(_remote(server, "/f"), dirs)
    assert server.requests[-1] == ("/f", f"bytes={len(half)}-")
    assert path.read_bytes() == PAYLOAD
    assert _listing(dirs[1]) == []


def test_stalled_transfer_times_out_as_truncated(server, dirs):
    server.files["/stall/f"] = PAYLOAD
    with pytest.raises(TransientDownloadError, match=rf"truncated: got \d+ of {len(PAYLOAD)} bytes \(TimeoutError"):
        download(_remote(server, "/stall/f"), *dirs, timeout=0.2, progress=False)
    assert _listing(dirs[0]) == []
    assert 0 < (dirs[1] / "payload.bin.part").stat().st_size < len(PAYLOAD)


def test_short_body_is_truncated_against_the_pinned_size(server, dirs):
    server.files["/f"] = PAYLOAD[:1000]  # a consistent response, but shorter than published
    with pytest.raises(DownloadError, match=f"server reports 1000 bytes, expected {len(PAYLOAD)}"):
        _get(_remote(server, "/f"), dirs)
    assert _listing(dirs[0]) == []


def test_resume_sends_range_and_appends(server, dirs):
    server.files["/f"] = PAYLOAD
    dirs[1].mkdir(parents=True)
    (dirs[1] / "payload.bin.part").write_bytes(PAYLOAD[:5000])
    path = _get(_remote(server, "/f"), dirs)
    assert server.requests == [("/f", "bytes=5000-")]
    assert path.read_bytes() == PAYLOAD
    verify_file(path, _remote(server, "/f"))


def test_server_ignoring_range_restarts_from_zero(server, dirs):
    server.files["/norange/f"] = PAYLOAD
    dirs[1].mkdir(parents=True)
    (dirs[1] / "payload.bin.part").write_bytes(b"garbage that must be overwritten")
    path = _get(_remote(server, "/norange/f"), dirs)
    assert server.requests[0][1] is not None  # we asked for a range ...
    assert path.read_bytes() == PAYLOAD  # ... got 200 and started over


def test_complete_part_of_unknown_size_is_refetched_after_416(server, dirs):
    server.files["/f"] = PAYLOAD
    dirs[1].mkdir(parents=True)
    (dirs[1] / "payload.bin.part").write_bytes(PAYLOAD)
    path = _get(_remote(server, "/f", sha256=PAYLOAD_SHA256), dirs)
    assert server.requests == [("/f", f"bytes={len(PAYLOAD)}-"), ("/f", None)]
    assert path.read_bytes() == PAYLOAD


def test_verified_file_already_present_makes_no_request(server, dirs):
    dirs[0].mkdir(parents=True)
    (dirs[0] / "payload.bin").write_bytes(PAYLOAD)
    path = _get(_remote(server, "/f"), dirs)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == []


def test_corrupt_file_already_present_is_replaced(server, dirs):
    server.files["/f"] = PAYLOAD
    dirs[0].mkdir(parents=True)
    (dirs[0] / "payload.bin").write_bytes(b"stale")
    assert _get(_remote(server, "/f"), dirs).read_bytes() == PAYLOAD
    assert server.requests == [("/f", None)]


def test_http_error_is_a_download_error(server, dirs):
    with pytest.raises(DownloadError, match=r"/missing: HTTP 404") as excinfo:
        _get(_remote(server, "/missing"), dirs)
    assert not excinfo.value.transient
    assert _listing(dirs[0]) == []


@pytest.mark.parametrize("status", [404, 410, 403, 400])
def test_client_errors_are_permanent(server, dirs, status):
    server.files["/f"] = PAYLOAD
    server.plans["/f"] = [status]
    with pytest.raises(DownloadError, match=rf"/f: HTTP {status}") as excinfo:
        _get(_remote(server, "/f"), dirs)
    assert type(excinfo.value) is DownloadError and not excinfo.value.transient


@pytest.mark.parametrize("answer", [503, 500, 502, 429, 408, "drop"])
def test_server_errors_and_dropped_connections_are_transient_and_a_retry_succeeds(server, dirs, answer):
    server.files["/f"] = PAYLOAD
    server.plans["/f"] = [answer]
    with pytest.raises(TransientDownloadError) as excinfo:
        _get(_remote(server, "/f"), dirs)
    assert excinfo.value.transient
    assert _get(_remote(server, "/f"), dirs).read_bytes() == PAYLOAD


def test_refused_connection_is_transient(dirs):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = RemoteFile(url=f"http://127.0.0.1:{port}/f", filename="payload.bin", sha256=PAYLOAD_SHA256)
    with pytest.raises(TransientDownloadError, match="cannot connect") as excinfo:
        _get(remote, dirs)
    assert excinfo.value.transient


def test_unresolvable_host_is_permanent(dirs):
    remote = RemoteFile(url="http://nonexistent.invalid/f", filename="payload.bin", sha256=PAYLOAD_SHA256)
    with pytest.raises(DownloadError, match="cannot resolve the host name") as excinfo:
        _get(remote, dirs)
    assert not excinfo.value.transient


def test_verify_file_reports_size_mismatch(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(PAYLOAD[:10])
    remote = RemoteFile(url="https://example.org/p", filename="payload.bin",
                        sha256=PAYLOAD_SHA256, size=len(PAYLOAD))
    with pytest.raises(DownloadError, match=f"size mismatch: expected {len(PAYLOAD)} bytes, got 10"):
        verify_file(path, remote)


# --- safe_extract_tar ---------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """Write a tar.gz of (name, data, symlink target) entries; data None means a symlink."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "member",
    [("../evil", b"x", None), ("/abs/evil", b"x", None), ("link", None, "/etc/passwd")],
    ids=["dotdot", "absolute", "symlink-outside"],
)
def test_safe_extract_tar_refuses_escaping_members(tmp_path, member):
    archive = _tar(tmp_path / "bad.tar.gz", [("ok.txt", b"fine", None), member])
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match=f"refused member {member[0]!r}"):
        safe_extract_tar(archive, dest)
    assert not dest.exists()
    assert _listing(tmp_path) == ["bad.tar.gz"]  # no temporary directory left behind
    assert not (tmp_path.parent / "evil").exists()


def test_safe_extract_tar_extracts_a_normal_archive(tmp_path):
    archive = _tar(tmp_path / "good.tar.gz",
                   [("data/a.csv", b"a,b\n1,2\n", None), ("README", b"hi", None)])
    dest = tmp_path / "out"
    files = safe_extract_tar(archive, dest)
    assert files == [dest / "data" / "a.csv", dest / "README"]
    assert (dest / "data" / "a.csv").read_bytes() == b"a,b\n1,2\n"
    assert _listing(tmp_path) == ["good.tar.gz", "out"]
    with pytest.raises(FileExistsError):
        safe_extract_tar(archive, dest)


def test_safe_extract_tar_rejects_a_non_tar(tmp_path):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(b"not a tar")
    with pytest.raises(DownloadError, match="not a readable tar archive"):
        safe_extract_tar(archive, tmp_path / "out")
    assert _listing(tmp_path) == ["x.tar.gz"]


# --- read_archive_member ------------------------------------------------------------------


def test_read_archive_member_from_zip_and_tar(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/Caravan.csv", b"x,y\n")
        zf.writestr("pkg/__init__.py", b"")
    assert read_archive_member(wheel, "pkg/data/Caravan.csv") == b"x,y\n"
    with pytest.raises(DownloadError, match=r"no member 'pkg/Caravan.csv'.*'pkg/data/Caravan.csv'"):
        read_archive_member(wheel, "pkg/Caravan.csv")

    sdist = _tar(tmp_path / "pkg-1.0.tar.gz", [("pkg-1.0/pkg/data/Caravan.csv", b"x,y\n", None)])
    assert read_archive_member(sdist, "pkg-1.0/pkg/data/Caravan.csv") == b"x,y\n"
    with pytest.raises(DownloadError, match="no member 'pkg/data/Caravan.csv'"):
        read_archive_member(sdist, "pkg/data/Caravan.csv")
    assert _listing(tmp_path) == ["pkg-1.0-py3-none-any.whl", "pkg-1.0.tar.gz"]


# --- fetch_pypi_file (real `pip download` from the configured index) ----------------------

SIX_WHEEL = "six-1.16.0-py2.py3-none-any.whl"
SIX_SHA256 = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"


def test_fetch_pypi_file_checks_the_pinned_sha256(tmp_path, monkeypatch):
    dest = tmp_path / "wheels"
    with pytest.raises(DownloadError) as excinfo:
        fetch_pypi_file("six", "1.16.0", SIX_WHEEL, "0" * 64, dest)
    assert f"sha256 mismatch: expected {'0' * 64}, got {SIX_SHA256}" in str(excinfo.value)
    assert _listing(dest) == []

    path = fetch_pypi_file("six", "1.16.0", SIX_WHEEL, SIX_SHA256, dest)
    assert path == dest / SIX_WHEEL
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SIX_SHA256
    assert _listing(dest) == [SIX_WHEEL]
    assert read_archive_member(path, "six.py").startswith(b'# Copyright (c) 2010-2020 Benjamin')

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the verified file is present")

    monkeypatch.setattr(dl.subprocess, "run", no_pip)
    assert fetch_pypi_file("six", "1.16.0", SIX_WHEEL, SIX_SHA256, dest) == path


# --- the image-classification sources, end to end against the local server ----------------

def _idx_gz(array: np.ndarray) -> bytes:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def _serve(server, name: str, body: bytes, **pins) -> RemoteFile:
    server.files[f"/{name}"] = body
    return RemoteFile(url=f"{server.url}/{name}", filename=name, **pins)


def test_full_mnist_source_downloads_verifies_and_parses(server, tmp_path, monkeypatch):
    """Generated IDX files (not MNIST) served locally, through the real fetch_mnist path."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (20, 28, 28)), "y": np.arange(20) % 10,
              "x_test": rng.integers(0, 256, (10, 28, 28)), "y_test": np.arange(10)}
    files = {}
    for key, array in arrays.items():
        body = _idx_gz(array)
        files[key] = _serve(server, f"{key}.gz", body, md5=hashlib.md5(body).hexdigest())
    monkeypatch.setattr(image_classification, "MNIST_FILES", files)

    raw = image_classification.fetch_mnist(tmp_path / "work", tmp_path / "partial")
    assert raw["x"].shape == (20, 28, 28, 1) and np.array_equal(raw["x"][..., 0], arrays["x"])
    assert np.array_equal(raw["y_test"], arrays["y_test"])

    files["y"] = RemoteFile(url=files["y"].url, filename="y-corrupt.gz", md5="0" * 32)
    with pytest.raises(DownloadError, match="md5"):
        image_classification.fetch_mnist(tmp_path / "work", tmp_path / "partial")
    assert not (tmp_path / "work" / "y-corrupt.gz").exists()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    """A gzipped tarball of regular files, built in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_cifar10_source_extracts_safely_and_reads_batches(server, tmp_path, monkeypatch):
    """A generated CIFAR-10-layout tarball (random pixels) through the real fetch_cifar10 path."""
    rng = np.random.default_rng(0)
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch)
    body = tar_gz_bytes(members)
    remote = _serve(server, "cifar.tar.gz", body, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    monkeypatch.setattr(image_classification, "CIFAR10_FILE", remote)

    raw = image_classification.fetch_cifar10(tmp_path / "work", tmp_path / "partial")
    assert raw["x"].shape == (20, 32, 32, 3) and raw["x_test"].shape == (4, 32, 32, 3)
    assert raw["y"].tolist() == [0, 1, 2, 3] * 5
    assert raw["class_names"][0] == "airplane"
