"""Downloads (checksum, resume, retries, errors) against a real local HTTP server, and safe extraction."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import zipfile

import numpy as np
import pytest

from lightcnn.data.download import DataError, download_file, extract_archive
from tests.data_helpers import RangeServer

# 3 MiB of incompressible bytes: several 1 MiB chunks, so a drop happens mid-file
PAYLOAD = np.random.default_rng(0).integers(0, 256, size=3 << 20, dtype=np.uint8).tobytes()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
FAST = dict(retries=3, backoff=0.01, timeout=10, progress=False)


def test_download_checks_md5_and_leaves_no_partial_file(tmp_path):
    with RangeServer({"/data.bin": PAYLOAD}) as server:
        dest = download_file(server.url + "/data.bin", tmp_path / "data.bin", md5=PAYLOAD_MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
    assert server.requests == [("/data.bin", None, 200)]


def test_dropped_connection_is_resumed_with_a_range_request(tmp_path):
    with RangeServer({"/data.bin": PAYLOAD}, drop_once={"/data.bin"}) as server:
        dest = download_file(server.url + "/data.bin", tmp_path / "data.bin", md5=PAYLOAD_MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD
    (_, first_range, first_status), (_, resume_range, resume_status) = server.requests
    assert first_range is None and first_status == 200
    resumed_from = int(resume_range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from < len(PAYLOAD) and resume_status == 206


def test_server_that_ignores_range_makes_the_download_restart(tmp_path):
    with RangeServer({"/data.bin": PAYLOAD}, drop_once={"/data.bin"}, ignore_range=True) as server:
        dest = download_file(server.url + "/data.bin", tmp_path / "data.bin", md5=PAYLOAD_MD5, **FAST)
    assert dest.read_bytes() == PAYLOAD  # the half-file was not kept in front of the full answer
    assert [status for _, _, status in server.requests] == [200, 200]
    assert server.requests[1][1] is not None  # a Range was asked for, and ignored


def test_existing_partial_file_is_resumed_and_a_verified_file_not_downloaded_again(tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    with RangeServer({"/data.bin": PAYLOAD}) as server:
        download_file(server.url + "/data.bin", tmp_path / "data.bin", md5=PAYLOAD_MD5, **FAST)
        download_file(server.url + "/data.bin", tmp_path / "data.bin", md5=PAYLOAD_MD5, **FAST)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=1000-", 206)]


def test_wrong_checksum_is_refused_and_leaves_nothing_behind(tmp_path):
    with RangeServer({"/data.bin": PAYLOAD}) as server:
        with pytest.raises(DataError, match="checksum mismatch.*expected 0{32}"):
            download_file(server.url + "/data.bin", tmp_path / "data.bin", md5="0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_fails_at_once_naming_the_url(tmp_path):
    with RangeServer({}) as server:
        with pytest.raises(DataError, match=r"/nothing\.bin: HTTP 404"):
            download_file(server.url + "/nothing.bin", tmp_path / "x.bin", **FAST)
    assert len(server.requests) == 1  # a 404 is not retried


def test_offline_error_names_the_url_and_the_local_source_option(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/cifar.tar.gz"
    with pytest.raises(DataError, match=r"cannot download http://127\.0\.0\.1:\d+/cifar\.tar\.gz.*data\.source"):
        download_file(url, tmp_path / "cifar.tar.gz", **FAST)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- extraction


def _tar(path, *members):
    """Write a .tar.gz of (TarInfo, bytes or None) pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name):
    return tarfile.TarInfo(name), b"content"


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_extracts_tar_and_zip(tmp_path):
    tar = _tar(tmp_path / "ok.tar.gz", _file("train/cat/1.jpg"), _link("train/cat/2.jpg", "1.jpg", tarfile.SYMTYPE))
    extract_archive(tar, tmp_path / "from_tar")
    assert (tmp_path / "from_tar/train/cat/1.jpg").read_bytes() == b"content"
    assert (tmp_path / "from_tar/train/cat/2.jpg").read_bytes() == b"content"  # a link inside is fine
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as zf:
        zf.writestr("test/dog/1.jpg", b"zipped")
    extract_archive(tmp_path / "ok.zip", tmp_path / "from_zip")
    assert (tmp_path / "from_zip/test/dog/1.jpg").read_bytes() == b"zipped"


@pytest.mark.parametrize("escaping_member", [
    _file("../escaped.txt"),
    _file("train/../../escaped.txt"),
    _file("/tmp/escaped-absolute.txt"),
    _link("train/link", "../../escaped.txt", tarfile.SYMTYPE),
    _link("train/link", "/etc/passwd", tarfile.SYMTYPE),
    _link("train/hard", "../escaped.txt", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"])
def test_tar_member_escaping_the_target_is_refused_before_anything_is_written(tmp_path, escaping_member):
    archive = _tar(tmp_path / "evil.tar.gz", _file("train/cat/1.jpg"), escaping_member)
    target = tmp_path / "out" / "target"
    with pytest.raises(DataError, match="outside the target directory"):
        extract_archive(archive, target)
    assert list(target.iterdir()) == []  # the harmless member was not written either
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_zip_member_escaping_the_target_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("train/cat/1.jpg", b"fine")
        zf.writestr("../escaped.txt", b"evil")
    with pytest.raises(DataError, match=r"'\.\./escaped\.txt'.*outside the target directory"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "target")
    assert list((tmp_path / "target").iterdir()) == []


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        extract_archive(tmp_path / "notes.txt", tmp_path / "target")
