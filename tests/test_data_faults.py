"""Faults in the data layer, each made real: a web server that answers an HTML page instead of
the archive, a disk that fills up while preprocess writes (a file size limit in a child
process), and shards damaged on disk after preprocess wrote them."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from lightcnn.data import DataError, download_file, fetch_dataset, load_manifest, make_dataset, preprocess_dataset
from lightcnn.data import pipeline as input_pipeline
from lightcnn.data.pipeline import verify_shards
from tests.conftest import PROJECT_ROOT, STAGE_START
from tests.data_helpers import RangeServer, build_cifar10_archive, build_class_tree, md5_of

QUIET = dict(progress=False)
LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in.</body></html>\n"


# --------------------------------------------------------------------------- an HTML page instead of the archive


def test_an_html_page_instead_of_the_archive_is_refused_and_never_kept(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    build_cifar10_archive(archive, per_class_per_batch=1, test_per_class=1)
    path = "/kriz/cifar-10-python.tar.gz"
    fetch_args = dict(raw_dir=tmp_path / "data/raw", md5=md5_of(archive), retries=2, **QUIET)
    with RangeServer({path: LOGIN_PAGE}, content_types={path: "text/html; charset=utf-8"}) as server:
        url = server.url + path
        with pytest.raises(DataError, match=r"server returned an HTML page instead of the archive \(Content-Type "
                                            r"text/html\): a login, error .*page\?.*data\.source"):
            fetch_dataset("cifar10", url=url, **fetch_args)
        assert len(server.requests) == 1  # not retried: asking again gets the same page
        assert not (tmp_path / "data/raw").exists()
        assert list((tmp_path / "data/downloads").iterdir()) == []  # no .part, nothing under the archive's name

        # once the server sends the archive, the next fetch gets it: nothing left over is taken for it
        server.files[path] = archive.read_bytes()
        server.content_types[path] = "application/x-gzip"
        info = fetch_dataset("cifar10", url=url, **fetch_args)
    assert info["format"] == "cifar-python"
    assert info["source"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert server.requests[-1] == (path, None, 200)  # a fresh download, not a resumed page


def test_an_html_body_sent_as_binary_is_caught_and_a_saved_page_is_not_reused(tmp_path):
    # without an md5 to check, only the bytes can tell a page from the file
    payload = b"PK\x03\x04" + bytes(range(256)) * 64
    with RangeServer({"/data.zip": b"\r\n  <html><body>This file has moved.</body></html>"},
                     content_types={"/data.zip": "application/octet-stream"}) as server:
        with pytest.raises(DataError, match=r"HTML page instead of the archive \(the body starts like a web page\)"):
            download_file(server.url + "/data.zip", tmp_path / "data.zip", retries=0, **QUIET)
        assert list(tmp_path.iterdir()) == []
        # a page saved under the archive's name (by hand, or by another tool) is fetched again, not trusted
        (tmp_path / "data.zip").write_bytes(LOGIN_PAGE)
        server.files["/data.zip"] = payload
        dest = download_file(server.url + "/data.zip", tmp_path / "data.zip", retries=0, **QUIET)
    assert dest.read_bytes() == payload and sorted(p.name for p in tmp_path.iterdir()) == ["data.zip"]


# --------------------------------------------------------------------------- the disk fills during preprocess

FILE_SIZE_LIMIT = 8 << 10

# RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a full disk fails with
# ENOSPC; SIGXFSZ would kill the process instead, so it is ignored.
LIMITED_PREPROCESS = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from lightcnn.data import preprocess_dataset
preprocess_dataset({raw!r}, {processed!r}, progress=False)
"""


def test_a_full_disk_during_preprocess_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    build_class_tree(tmp_path / "tree", {"alpha": 20, "beta": 20}, size=16)
    data = tmp_path / "data"
    fetch_dataset("folder", data / "raw", source=tmp_path / "tree", **QUIET)
    script = LIMITED_PREPROCESS.format(limit=FILE_SIZE_LIMIT, raw=str(data / "raw"), processed=str(data / "processed"))
    result = subprocess.run([sys.executable, "-c", STAGE_START + script], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("lightcnn.data.download.DataError: ran out of disk space while writing "
                                f"{data / 'processed'}"), result.stderr[-2000:]
    assert "File too large" in last_line and "Free space on that disk" in last_line
    assert sorted(p.name for p in data.iterdir()) == ["raw"]  # no processed dir, no temporary dir

    manifest = preprocess_dataset(data / "raw", data / "processed", **QUIET)  # with room, it succeeds
    assert manifest["splits"]["test"]["num_examples"] == 4 and manifest["image_size"] == [16, 16]
    shard = data / "processed" / manifest["splits"]["train"]["shards"][0]
    assert shard.stat().st_size > FILE_SIZE_LIMIT  # so the limited run really hit the limit
    assert sorted(p.name for p in data.iterdir()) == ["processed", "raw"]


# --------------------------------------------------------------------------- shards damaged after preprocess


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    build_class_tree(root / "tree", {"ant": 12, "bee": 12}, test_per_class=3, size=16)
    fetch_dataset("folder", root / "raw", source=root / "tree", **QUIET)
    preprocess_dataset(root / "raw", root / "processed", examples_per_shard=6, **QUIET)
    return root / "processed"


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    else:
        del data[-100:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_shard_damaged_after_preprocess_is_caught_before_training_reads_it(processed, tmp_path, how):
    copy = tmp_path / "processed"
    shutil.copytree(processed, copy)
    make_dataset(copy, "train", 8, training=True)  # intact: fine
    shard = copy / load_manifest(copy)["splits"]["train"]["shards"][1]
    _damage(shard, how)
    damaged = rf"shard {shard} is damaged: its sha256 is .*the manifest says .*"
    advice = r"Rerun `dvc repro preprocess` \(or restore the tracked copy with `dvc checkout data/processed`\)"
    with pytest.raises(DataError, match=damaged + advice):
        make_dataset(copy, "train", 8, training=True)
    with pytest.raises(DataError, match=damaged):
        verify_shards(copy)
    verify_shards(copy, splits=("val", "test"))  # the other splits are intact
    make_dataset(copy, "test", 8, training=False)


def test_shards_the_manifest_does_not_vouch_for_are_refused(processed, tmp_path):
    copy = tmp_path / "processed"
    shutil.copytree(processed, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    shard = manifest["splits"]["val"]["shards"][0]
    del manifest["sha256"][shard]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=f"no checksum for the shard {shard}: the manifest does not belong"):
        make_dataset(copy, "val", 8, training=False)


def test_verified_digests_are_kept_per_process_but_a_changed_shard_is_hashed_again(processed, tmp_path):
    copy = tmp_path / "processed"
    shutil.copytree(processed, copy)
    a_minute_ago = time.time() - 60
    shards = sorted(copy.glob("*.tfrecord"))
    for shard in shards:  # written long enough ago for its mtime to be trusted
        os.utime(shard, (a_minute_ago, a_minute_ago))
    verify_shards(copy)
    keys = {(str(shard.resolve()), shard.stat().st_size, shard.stat().st_mtime_ns) for shard in shards}
    assert keys <= input_pipeline._VERIFIED_DIGESTS.keys()  # the next epoch's dataset reads no shard again
    _damage(shards[0], "flip")  # a new mtime, so a new key: hashed again, and caught
    with pytest.raises(DataError, match=f"shard {shards[0]} is damaged"):
        verify_shards(copy)
