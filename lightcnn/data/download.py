"""Resumable, checksummed downloads; safe archive extraction and reading in place.

A download is written to `<name>.part`, resumed with an HTTP Range request after a
dropped connection, and renamed to `<name>` only once its checksum matched, so a file
without the `.part` suffix is always complete and verified. An HTML page served in place
of the file (a login, error or "moved" page, often with HTTP 200) is refused before
anything is written, and never kept under the file's name.
"""
from __future__ import annotations

import gzip
import hashlib
import itertools
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

import requests
from tqdm import tqdm


class DataError(Exception):
    """Bad input or a failed fetch/preprocess step; the message says what to do."""


CHUNK_SIZE = 1 << 16  # also how much a dropped connection can lose

# HTTP statuses worth retrying; any other error status fails at once.
RETRYABLE_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: str | os.PathLike, md5: str, what: str) -> None:
    """Raise DataError unless the file's MD5 is `md5`. `what` names the file for the message."""
    actual = file_digest(path, "md5")
    if actual != md5.lower():
        raise DataError(
            f"checksum mismatch for {what}: MD5 is {actual}, expected {md5.lower()}. The file is "
            "damaged or not the one expected; fetch it again, or pass the right md5 if you meant "
            "to use a different file."
        )


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    timeout: float = 60.0,
    retries: int = 4,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resuming a partial `dest.part`; return `dest`.

    If `dest` already exists with the right checksum nothing is downloaded. Connection
    errors, timeouts and 5xx answers are retried `retries` times, waiting
    `backoff * 2**attempt` seconds in between; each retry resumes where the file stopped
    (or restarts, if the server ignores Range). With `md5` the finished file is checked
    before it is renamed; a mismatch deletes it and raises DataError.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if md5 is None and not looks_like_html(_first_bytes(dest)):
            return dest
        if md5 is not None and file_digest(dest, "md5") == md5.lower():
            return dest
        dest.unlink()  # a stale or damaged copy (or a page saved by another tool): fetch it again

    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _download_attempt(url, part, timeout, progress)
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _RetryableError) as e:
            last_error = e
        except requests.RequestException as e:  # a bad URL and the like: retrying will not help
            raise DataError(f"cannot download {url}: {e}") from e
    else:
        if isinstance(last_error, requests.ConnectionError):
            raise DataError(
                f"cannot download {url}: {last_error}. If this machine is offline, download the file "
                "elsewhere and point data.source (the `source` argument) at the local copy."
            ) from last_error
        raise DataError(f"cannot download {url} after {retries + 1} attempts: {last_error}") from last_error

    if md5 is not None:
        try:
            check_md5(part, md5, f"{url} (downloaded)")
        except DataError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest


class _RetryableError(Exception):
    """A failed attempt that the next attempt may fix."""


def _download_attempt(url: str, part: Path, timeout: float, progress: bool) -> None:
    """One GET of `url` into `part`, resuming it if it has bytes; raises unless complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # the file's own bytes, never a re-compressed transfer
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 416 and have:
            return  # nothing left to send: the partial file is already whole (its checksum decides)
        if response.status_code in RETRYABLE_STATUSES:
            raise _RetryableError(f"HTTP {response.status_code} from {url}")
        if response.status_code >= 400:
            raise DataError(f"cannot download {url}: HTTP {response.status_code} {response.reason}")
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in HTML_CONTENT_TYPES:
            raise DataError(html_page_message(url, f"Content-Type {content_type}"))

        if response.status_code == 206:
            if _content_range_start(response) != have:
                part.unlink()  # not the range asked for: start again from zero
                raise _RetryableError(f"{url} answered a Range request with the wrong range")
            mode, done = "ab", have
        else:
            mode, done = "wb", 0  # a fresh start, or a server that ignores Range: restart
        remaining = response.headers.get("Content-Length")
        total = done + int(remaining) if remaining is not None else None

        chunks = response.iter_content(CHUNK_SIZE)
        first = next(chunks, b"")
        if mode == "wb" and looks_like_html(first):  # a page sent as application/octet-stream
            raise DataError(html_page_message(url, "the body starts like a web page"))
        with open(part, mode) as f, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, mininterval=1.0,
        ) as bar:
            for chunk in itertools.chain([first], chunks):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise _RetryableError(f"connection closed early while reading {url}")


HTML_CONTENT_TYPES = {"text/html", "application/xhtml+xml"}
HTML_SNIFF_BYTES = 512
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")


def looks_like_html(data: bytes) -> bool:
    """Whether bytes start like an HTML page (no archive or image format does)."""
    start = data[:HTML_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(_HTML_STARTS)


def _first_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HTML_SNIFF_BYTES)


def html_page_message(url: str, evidence: str) -> str:
    return (f"cannot download {url}: the server returned an HTML page instead of the archive ({evidence}): "
            "a login, error or 'file moved' page? Open the URL in a browser to see what it says, then fix "
            "data.url, or download the archive yourself and point data.source at the local copy. "
            "Nothing was saved.")


def _content_range_start(response: requests.Response) -> int | None:
    # "Content-Range: bytes 100-999/1000" -> 100
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- extraction


def extract_archive(archive: str | os.PathLike, target_dir: str | os.PathLike) -> None:
    """Extract a .tar(.gz/.bz2/.xz) or .zip archive into `target_dir`.

    Every member is checked before anything is written: one that would land outside
    `target_dir` (absolute path, '..', a link pointing outside, a device file) makes the
    whole extraction fail with DataError.
    """
    archive, target_dir = Path(archive), Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive)
    with reading_archive(archive):
        _extract(archive, kind, target_dir)


def _extract(archive: Path, kind: str, target_dir: Path) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                check_member_path(info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(f"archive {archive} has a symbolic link {info.filename!r}; refusing to extract it")
            zf.extractall(target_dir)
    else:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_tar_member(member, archive)
            try:
                # The "data" filter (Python 3.10.12+/3.11.4+) is a second line of defence.
                tf.extractall(target_dir, members=members, filter="data")
            except tarfile.FilterError as e:
                raise DataError(f"archive {archive}: refusing to extract {e}") from e


# What reading a truncated or corrupt archive raises (gzip: EOFError or BadGzipFile; bz2:
# OSError "Invalid data stream", not caught here: too broad).
ARCHIVE_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, tarfile.TarError,
                       zipfile.BadZipFile)


@contextmanager
def reading_archive(archive: Path) -> Iterator[None]:
    """Turns an archive that breaks off or is corrupt while being read into a DataError naming it."""
    try:
        yield
    except ARCHIVE_READ_ERRORS as e:
        raise DataError(f"archive {archive} is damaged: reading it failed with {type(e).__name__}: {e}. It is "
                        "truncated (an interrupted download or copy?) or corrupt; download or copy it again") from e


def archive_kind(archive: str | os.PathLike) -> str:
    """"zip" or "tar" (plain or compressed); DataError saying what the file seems to be otherwise."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except ARCHIVE_READ_ERRORS:
        pass  # a compressed stream that breaks off before the first tar header
    with open(archive, "rb") as f:
        head = f.read(6)
    if not head:
        raise DataError(f"{archive} is empty (0 bytes): an interrupted download or copy? Download or copy it again")
    if head.startswith(b"PK"):
        raise DataError(f"{archive} starts like a zip archive but its directory (at the end of the file) is "
                        "missing or damaged: the file is truncated or corrupt; download or copy it again")
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        raise DataError(f"{archive} is compressed (gzip, bzip2 or xz) but holds no readable tar archive: it is "
                        "truncated or corrupt, or not a tar inside; download or copy it again")
    raise DataError(f"{archive} is neither a tar nor a zip archive; give a .tar.gz, .tar or .zip file or a directory")


def check_member_path(name: str, archive: Path) -> str:
    """The member's normalised relative path; DataError if it could escape the target."""
    name = name.replace("\\", "/")
    normalised = posixpath.normpath(name)
    if (name.startswith("/") or (len(name) > 1 and name[1] == ":")
            or normalised == ".." or normalised.startswith("../")):
        raise DataError(
            f"archive {archive} has a member {name!r} that would be written outside the target "
            "directory; refusing to extract it (the archive is damaged or malicious)"
        )
    return normalised


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = check_member_path(member.name, archive)
    if member.issym():
        # A symlink's target is relative to the directory holding it.
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise DataError(
                f"archive {archive} has a symbolic link {member.name!r} -> {member.linkname!r} pointing "
                "outside the target directory; refusing to extract it"
            )
    elif member.islnk():
        check_member_path(member.linkname, archive)  # hard link targets are archive paths
    elif not (member.isfile() or member.isdir()):
        raise DataError(f"archive {archive} has a special file {member.name!r} (device or fifo); "
                        "refusing to extract it")


# --------------------------------------------------------------------------- reading archives in place


MAX_LINK_HOPS = 8  # a link to a link to ...: further is a loop


@dataclass
class ArchiveIndex:
    """What a tar or zip archive holds, by normalised member name.

    entries: its regular files ("a/b.jpg"), folders ("a/") and links, in archive order;
    links: each link whose chain ends at a regular file -> that file's name (tar hard links and
        symbolic links, zip symbolic links: the copy of a file that `tar` or `zip` stored as a link);
    broken_links: each other link -> why it cannot be read.
    """

    entries: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    broken_links: dict[str, str] = field(default_factory=dict)


def scan_archive(archive: str | os.PathLike) -> ArchiveIndex:
    """List a tar or zip archive without extracting it; DataError for a name that points outside
    the archive (absolute, '..'), and for an archive that is not one or is damaged."""
    archive = Path(archive)
    kind = archive_kind(archive)
    index, files, targets = ArchiveIndex(), set(), {}
    with reading_archive(archive):
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = check_member_path(info.filename, archive)
                    if stat.S_ISLNK(info.external_attr >> 16):  # a zip stores a link's target as its content
                        targets[name] = _link_target(name, zf.read(info).decode("utf-8", "replace"))
                    elif not info.is_dir():
                        files.add(name)
                    index.entries.append(name + ("/" if info.is_dir() else ""))
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    name = check_member_path(member.name, archive)
                    if member.islnk():  # a hard link's target is an archive path
                        targets[name] = posixpath.normpath(member.linkname.replace("\\", "/"))
                    elif member.issym():
                        targets[name] = _link_target(name, member.linkname)
                    elif member.isfile():
                        files.add(name)
                    elif not member.isdir():
                        continue  # devices, fifos: no part of a dataset
                    index.entries.append(name + ("/" if member.isdir() else ""))
    for name, target in targets.items():
        for _ in range(MAX_LINK_HOPS):
            if target not in targets:
                break
            target = targets[target]
        if target in files:
            index.links[name] = target
        elif target in targets:
            index.broken_links[name] = "a link in the archive that leads through too many links (a loop?)"
        else:
            index.broken_links[name] = (f"a link in the archive to {target!r}, which is not a file in it "
                                        "(a folder, or missing)")
    return index


def _link_target(name: str, link: str) -> str:
    """The archive name a symbolic link at `name` points to (relative to its folder)."""
    link = link.replace("\\", "/")
    if link.startswith("/"):  # absolute: an archive path
        return posixpath.normpath(link.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(name), link))


def list_archive(archive: str | os.PathLike) -> list[str]:
    """The regular files ("a/b.jpg"), folders ("a/") and links of a tar or zip archive, names
    normalised (see scan_archive)."""
    return scan_archive(archive).entries


def iter_archive_files(archive: str | os.PathLike, wanted: Iterable[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """(normalised name, open stream) of each regular file of a tar or zip archive named in
    `wanted`, in archive order: one pass, as a compressed tar must be read. DataError for a
    damaged archive."""
    archive, wanted = Path(archive), set(wanted)
    with reading_archive(archive):
        if archive_kind(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = check_member_path(info.filename, archive)
                    if name in wanted and not info.is_dir():
                        with zf.open(info) as stream:
                            yield name, stream
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    name = check_member_path(member.name, archive)
                    if member.isfile() and name in wanted:
                        yield name, tf.extractfile(member)


class ArchiveReader:
    """Reads regular files of a tar or zip archive by (normalised) name, without extracting.

    A zip is read on demand. A compressed tar can only be read front to back, so the
    `wanted` files are read into memory in one pass when the reader opens; each is kept
    until it was read as many times as `wanted` names it (several links may share a file).
    """

    def __init__(self, archive: str | os.PathLike, wanted: Iterable[str]):
        archive = Path(archive)
        self.archive, self.zip, self.loaded = archive, None, {}
        self.remaining = Counter(wanted)
        if archive_kind(archive) == "zip":
            with reading_archive(archive):
                self.zip = zipfile.ZipFile(archive)
                self.zip_names = {check_member_path(info.filename, archive): info for info in self.zip.infolist()}
        else:
            with reading_archive(archive):  # reads happen here, outside the iterator
                self.loaded = {name: stream.read() for name, stream in iter_archive_files(archive, self.remaining)}

    def read(self, name: str) -> bytes:
        """The file's bytes (a tar file can be read as many times as it was wanted)."""
        if self.zip:
            with reading_archive(self.archive):
                return self.zip.read(self.zip_names[name])
        self.remaining[name] -= 1
        return self.loaded[name] if self.remaining[name] > 0 else self.loaded.pop(name)

    def close(self) -> None:
        if self.zip:
            self.zip.close()
        self.loaded = {}


def remove_tree(path: Path) -> None:
    """Remove a file or directory if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temp_dir_beside(final: Path) -> Path:
    """A new hidden temporary directory next to `final` (same filesystem, so renaming is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A temporary directory that replaces `final` when the block succeeds; removed if it fails."""
    tmp = temp_dir_beside(final)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished directory `tmp` in place of `final` (which may exist)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private (0700)
    if final.exists() or final.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        remove_tree(old)
    else:
        os.replace(tmp, final)

