"""Atomic file and folder writes: write under a temporary name in the same folder, then rename.

A reader (or a later stage) never sees a half-written file or folder, even after a crash.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_in(folder: str | os.PathLike, file_name: str, error: type[Exception]) -> Any:
    """folder/file_name decoded; else `error` naming the folder and the problem (no such file,
    or not valid JSON). For the recorded folders (docs/latency, docs/gpu, docs/suite-time)."""
    folder = Path(folder)
    path = folder / file_name
    if not path.is_file():
        raise error(f"{folder}: no {file_name}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as decode_error:
        raise error(f"{folder}: {file_name} is not valid JSON ({decode_error})") from decode_error


def finished_folders(parent: str | os.PathLike) -> list[Path]:
    """The folders under `parent` by name, without new_folder's staging ones (hidden: '.<name>.*')
    or any other hidden folder; [] where `parent` does not exist."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(path for path in parent.iterdir() if path.is_dir() and not path.name.startswith("."))


def check_new_folder(parent: str | os.PathLike, name: str, what: str = "folder") -> None:
    """Raise now what new_folder(parent, name, what) would: ValueError for a name that is not a
    plain folder name, FileExistsError where parent/name exists. For a caller that must refuse
    before long work whose result goes there."""
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"{what} name {name!r}: give a plain folder name (no '/', not starting with '.')")
    if (Path(parent) / name).exists():
        raise FileExistsError(f"{Path(parent) / name} exists already: give the {what} another name")


@contextmanager
def new_folder(parent: str | os.PathLike, name: str, what: str = "folder") -> Iterator[Path]:
    """Yield an empty folder to fill; when the block ends without an error it appears as
    parent/name, complete, else nothing appears. Never overwrites: FileExistsError where
    parent/name exists; ValueError for a name that is not a plain folder name (`what` names
    the thing in both messages, e.g. "run", "measurement")."""
    check_new_folder(parent, name, what)
    parent = Path(parent)
    target = parent / name
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        folder = staging / name
        folder.mkdir()
        yield folder
        os.rename(folder, target)  # fails rather than replace a folder that appeared meanwhile
    finally:
        shutil.rmtree(staging, ignore_errors=True)
