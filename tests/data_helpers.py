"""Builders for the data tests: CIFAR archives in the official python format, class-folder
trees of real or generated images, and a local HTTP server with Range support."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _random_batch(rng: np.random.Generator, labels: list[int]) -> np.ndarray:
    """CIFAR rows: (N, 3072) uint8, each row the R, G and B planes of a 32x32 image."""
    return rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)


def build_cifar10_archive(path: Path, per_class_per_batch: int = 2, test_per_class: int = 2, seed: int = 0) -> dict:
    """cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} in a .tar.gz.

    Returns {record path: (HWC uint8 image, label)} for every image, with the record path
    that preprocess stores ("cifar-10-batches-py/<batch>/<index>").
    """
    rng = np.random.default_rng(seed)
    expected = {}
    with tarfile.open(path, "w:gz") as tar:
        meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10, b"num_vis": 3072}
        _add_bytes(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in batches:
            n = test_per_class if name == "test_batch" else per_class_per_batch
            labels = rng.permutation(np.repeat(np.arange(10), n)).tolist()
            data = _random_batch(rng, labels)
            batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                     b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
            _add_bytes(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
            for i, label in enumerate(labels):
                expected[f"cifar-10-batches-py/{name}/{i}"] = (data[i].reshape(3, 32, 32).transpose(1, 2, 0), label)
        _add_bytes(tar, "cifar-10-batches-py/readme.html", b"<html>test archive</html>")
    return expected


def build_cifar100_archive(path: Path, train_per_class: int = 2, test_per_class: int = 1, seed: int = 0) -> dict:
    """cifar-100-python/{train, test, meta} in a .tar.gz: 100 fine classes, 20 coarse ones
    (fine class f belongs to coarse class f % 20). Returns {record path: (image, fine label)}."""
    rng = np.random.default_rng(seed)
    fine_names = [f"fine{i:02d}" for i in range(100)]
    coarse_names = [f"coarse{i:02d}" for i in range(20)]
    expected = {}
    with tarfile.open(path, "w:gz") as tar:
        meta = {b"fine_label_names": [n.encode() for n in fine_names],
                b"coarse_label_names": [n.encode() for n in coarse_names]}
        _add_bytes(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
        for name, n in (("train", train_per_class), ("test", test_per_class)):
            fine = rng.permutation(np.repeat(np.arange(100), n)).tolist()
            data = _random_batch(rng, fine)
            batch = {b"filenames": [f"x{i}.png".encode() for i in range(len(fine))], b"batch_label": name.encode(),
                     b"fine_labels": fine, b"coarse_labels": [f % 20 for f in fine], b"data": data}
            _add_bytes(tar, f"cifar-100-python/{name}", pickle.dumps(batch, protocol=2))
            for i, label in enumerate(fine):
                expected[f"cifar-100-python/{name}/{i}"] = (data[i].reshape(3, 32, 32).transpose(1, 2, 0), label)
    return expected


def write_image(path: Path, array: np.ndarray, mode: str | None = None, **save_args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **save_args)


def build_class_tree(root: Path, classes: dict[str, int], test_per_class: int = 2, size: int = 16,
                     seed: int = 0) -> None:
    """root/{train,test}/<class>/NNN.png of random RGB images (classes: name -> train count)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for name, n_train in classes.items():
            for i in range(n_train if split == "train" else test_per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                write_image(root / split / name / f"{i:03d}.png", pixels)


def _first_per_class(tar: tarfile.TarFile, per_class: int | dict[str, int]) -> Iterator[tarfile.TarInfo]:
    """The image files of the real CIFAR-10 JPEG archive (<split>/<class>/NNNN.jpg) that are
    among the first `per_class` of their class: one count for every split, or one per split
    ({split: count}; a split not named keeps none)."""
    for member in tar:
        parts = member.name.split("/")
        if member.isfile() and len(parts) == 3:
            limit = per_class if isinstance(per_class, int) else per_class.get(parts[0], 0)
            if int(Path(parts[2]).stem) < limit:
                yield member


def extract_real_cifar_subset(archive: Path, out: Path, per_class: int) -> None:
    """The first `per_class` images of each class and split of the real CIFAR-10 JPEG archive,
    as a class-folder tree (reads the archive once, writes only what is kept)."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in _first_per_class(tar, per_class):
            target = out / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())


def write_cifar10_subset(archive: Path, target: Path, per_class: dict[str, int]) -> Path:
    """The first `per_class[split]` JPEGs of each class of each split of the CIFAR-10 JPEG
    archive, as a .tar.gz of the same layout at `target` (written under a temporary name).

    What reads the first N images per class in file order (lightcnn.data.arrays with
    max_per_class, load_cifar10_sample) gets the same images from it as from the whole
    archive, for N up to these counts, without parsing the whole archive's 60,000 member
    headers (about 2 s per read on the machines here)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tarfile.open(archive, "r:gz") as source, tarfile.open(partial, "w:gz", compresslevel=1) as subset:
        for member in _first_per_class(source, per_class):
            subset.addfile(member, source.extractfile(member))
    partial.rename(target)
    return target


class RangeServer:
    """An HTTP server on 127.0.0.1 serving `files` ({url path: bytes}) with Range support.

    drop_once: url paths whose first GET sends half the file, then closes the connection.
    ignore_range: answer every GET with the whole file (200), as some servers do.
    content_types: {url path: Content-Type header} (none is sent for other paths).
    requests: (path, Range header or None, status) of every GET, in order.
    `files` and `content_types` may be changed while the server runs.
    """

    def __init__(self, files: dict[str, bytes], drop_once: set[str] = frozenset(), ignore_range: bool = False,
                 content_types: dict[str, str] | None = None):
        self.files, self.drop_once, self.ignore_range = dict(files), set(drop_once), ignore_range
        self.content_types = dict(content_types or {})
        self.requests: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                range_header = self.headers.get("Range")
                if data is None:
                    server.requests.append((self.path, range_header, 404))
                    self.send_error(404)
                    return
                start = 0
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        server.requests.append((self.path, range_header, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                status = 206 if start else 200
                server.requests.append((self.path, range_header, status))
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                if self.path in server.content_types:
                    self.send_header("Content-Type", server.content_types[self.path])
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the client sees the connection drop mid-file
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
