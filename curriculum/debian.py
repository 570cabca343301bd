"""Read files out of a Debian package (.deb) in pure Python: no dpkg, no apt, no root.

Debian's archive publishes some data sets as packages. A ``.deb`` is an ``ar`` archive
(``!<arch>\\n``, then members with 60-byte headers): ``debian-binary`` (``2.0``), ``control.tar.*``
and ``data.tar.*``, whose members are the package's files (``./usr/share/...``). ``data.tar`` may
be uncompressed or xz/gzip/bzip2-compressed (tarfile reads those as a stream, so a large package
is never held in memory compressed); zstd, which Ubuntu uses but Debian's archive does not, is
refused with a clear error (Python 3.11's tarfile cannot read it).

Nothing is extracted to disk. As in :func:`curriculum.download.safe_extract_tar`, a package with
an absolute member name or a ``..`` component is refused as a whole; links are never followed,
so asking for a member that is a link (or a directory, a device...) is refused too.
Every failure is a :class:`~curriculum.download.DownloadError` naming the package and the member.
"""
from __future__ import annotations

import difflib
import io
import lzma
import os
import tarfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable, Iterator

from curriculum.download import DownloadError

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60
# data.tar's compressions that tarfile's "r|*" stream mode detects by itself
READABLE_DATA_MEMBERS = ("data.tar", "data.tar.xz", "data.tar.gz", "data.tar.bz2")


def list_deb_files(deb_path: Path) -> list[str]:
    """The regular files the package would install, in archive order (``usr/share/...``, no ``./``)."""
    with _data_tar(deb_path) as (tar, label):
        return [name for info, name in _checked_members(tar, label) if info.isreg()]


def read_deb_member(deb_path: Path, member: str) -> bytes:
    """The bytes of one file of the package, e.g. ``usr/share/doc/<package>/copyright``."""
    return read_deb_members(deb_path, [member])[member]


def read_deb_members(deb_path: Path, members: Iterable[str]) -> dict[str, bytes]:
    """The bytes of several files, read in one pass over ``data.tar``; keyed as asked.

    A leading ``./`` in a name is optional. The whole archive is read even after the last
    requested file, so an unsafe name anywhere refuses the package whatever was asked for.
    """
    wanted = {_normalised(member): member for member in members}
    found: dict[str, bytes] = {}
    names: list[str] = []
    with _data_tar(deb_path) as (tar, label):
        for info, name in _checked_members(tar, label):
            names.append(name)
            if name not in wanted:
                continue
            if not info.isreg():
                kind = f"a link to {info.linkname!r}" if info.issym() or info.islnk() else "not a regular file"
                raise DownloadError(f"{label}: member {name!r} is {kind}; only regular files are read")
            with tar.extractfile(info) as handle:
                found[name] = handle.read()
    for name, asked in wanted.items():
        if name not in found:
            similar = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
            raise DownloadError(
                f"{label}: no member {asked!r}; similar names: {similar or 'none'} ({len(names)} members in all)"
            )
    return {wanted[name]: content for name, content in found.items()}


def _normalised(name: str) -> str:
    return PurePosixPath(name).as_posix().removeprefix("./")


def _checked_members(tar: tarfile.TarFile, label: str) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Each member with its name minus ``./``; refuses absolute names and ``..`` components."""
    for info in tar:
        path = PurePosixPath(info.name)
        if path.is_absolute() or ".." in path.parts:
            raise DownloadError(f"{label}: refused member {info.name!r}: absolute or outside the package")
        yield info, _normalised(info.name)


@contextmanager
def _data_tar(deb_path: Path) -> Iterator[tuple[tarfile.TarFile, str]]:
    """``data.tar`` of the package as a streamed TarFile, with a label for error messages."""
    deb_path = Path(deb_path)
    with open(deb_path, "rb") as fh:
        members = _ar_members(fh, deb_path)
        data = [name for name in members if name.startswith("data.tar")]
        if len(data) != 1:
            raise DownloadError(f"{deb_path}: expected one data.tar.* member, found {data or 'none'}")
        name = data[0]
        if name not in READABLE_DATA_MEMBERS:
            hint = " (zstd: Python 3.11's tarfile cannot read it)" if name.endswith(".zst") else ""
            raise DownloadError(f"{deb_path}: cannot read {name}{hint}")
        offset, size = members[name]
        fh.seek(offset)
        label = f"{deb_path} ({name})"
        try:
            with tarfile.open(fileobj=_MemberReader(fh, size), mode="r|*") as tar:
                yield tar, label
        except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
            raise DownloadError(f"{label}: not a readable tar archive: {exc}") from exc


def _ar_members(fh: BinaryIO, deb_path: Path) -> dict[str, tuple[int, int]]:
    """Offset and size of each member of the ``ar`` archive, after checking it is a .deb."""
    if fh.read(len(AR_MAGIC)) != AR_MAGIC:
        raise DownloadError(f"{deb_path}: not a Debian package (no ar archive signature)")
    file_size = os.fstat(fh.fileno()).st_size
    members: dict[str, tuple[int, int]] = {}
    while header := fh.read(AR_HEADER_SIZE):
        start = fh.tell() - len(header)
        size_field = header[48:58].strip()
        if len(header) < AR_HEADER_SIZE or header[58:60] != b"`\n" or not size_field.isdigit():
            raise DownloadError(f"{deb_path}: corrupt ar member header at byte {start}")
        name = header[:16].decode("ascii", "replace").rstrip().removesuffix("/")  # GNU ar: "name/"
        offset, size = fh.tell(), int(size_field)
        if offset + size > file_size:
            raise DownloadError(
                f"{deb_path}: member {name!r} is truncated: {size} bytes announced, {file_size - offset} present"
            )
        members[name] = (offset, size)
        fh.seek(size + size % 2, os.SEEK_CUR)  # members start at even offsets
    if "debian-binary" not in members:
        raise DownloadError(f"{deb_path}: not a Debian package (no debian-binary member)")
    offset, size = members["debian-binary"]
    fh.seek(offset)
    if not (version := fh.read(size)).startswith(b"2."):
        raise DownloadError(f"{deb_path}: unsupported Debian package format {version!r}")
    return members


class _MemberReader(io.RawIOBase):
    """The next ``size`` bytes of ``fh``: one ``ar`` member, read as a stream without copying it."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh, self._left = fh, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._fh.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)
