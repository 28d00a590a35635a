"""Fetch a dataset into a raw directory that `preprocess` reads.

The raw directory holds one of three layouts, named by `format` in its `fetch_info.json`:

- "cifar-python": the official CIFAR python archive, extracted (`cifar-10-batches-py/` or
  `cifar-100-python/`), with the sha256 of each pickle so preprocess can check them again
  before loading them;
- "class-folder-archive": a .tar(.gz)/.zip archive holding `train/<class>/*`,
  `test/<class>/*` and optionally `valid/<class>/*` (or `val/`, `validation/`; split folder
  names in any letter case), possibly inside one top
  folder (`root`), copied as it is: preprocess reads it in place, so no tens of thousands
  of small files are written (and tracked by DVC);
- "class-folders": the same split folders, copied from a directory (symbolic links followed:
  a dataset may be a folder of links; a dangling link or one that loops back to a folder
  above it is not copied, and listed in `skipped`).

`fetch_info.json` also records the dataset and where it came from, as a `source` record
(see `source_record`): a local copy or a download, its path or URL, the sha256 of what was
used, what was asked for and why that choice was made; never any credentials. The
directory is built under a temporary name and renamed into place when complete.

Which source: `resolve_source` decides (pure: it only looks at the file system). The
default, source="auto", uses the caller's `local_copy` of the dataset when it exists and
the official download otherwise; source=None always downloads; a path always uses that
path.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import zipfile
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lightcnn.data.download import (
    ArchiveIndex,
    DataError,
    check_md5,
    download_file,
    extract_archive,
    file_digest,
    remove_tree,
    scan_archive,
    staged_dir,
)

DATASETS = ("cifar10", "cifar100", "birds", "folder")
FETCH_INFO = "fetch_info.json"

# Folder names of the splits in a class-folder dataset, matched in any letter case ("Train/");
# "valid" is the Kaggle birds name.
TRAIN_FOLDER, TEST_FOLDER = "train", "test"
VAL_FOLDERS = ("valid", "val", "validation")


@dataclass(frozen=True)
class CifarArchive:
    url: str
    md5: str
    folder: str  # the one top-level folder inside the archive
    num_classes: int


CIFAR_ARCHIVES = {
    "cifar10": CifarArchive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py", 10),
    "cifar100": CifarArchive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", 100),
}

# Official label order; a class-folder copy of CIFAR-10 must use these folder names.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

KAGGLE_BIRDS = "gpiosenka/100-bird-species"

AUTO = "auto"  # the default source: the local copy when it is there, else the official download


@dataclass(frozen=True)
class ResolvedSource:
    """Where a dataset will come from, and why (what `resolve_source` decided).

    kind: "local" (a file or directory on this machine) or "download".
    path: the local copy resolved against base_dir (kind "local"), else None.
    given_path: that path as the caller wrote it (relative paths stay relative, so records
        do not depend on the machine), else None.
    url: what is downloaded (kind "download"): the CIFAR archive URL or the Kaggle dataset page.
    requested: the `source` argument as given: "auto", None or the path as a string.
    reason: one sentence saying why this source was chosen.
    """

    kind: str
    path: Path | None
    given_path: str | None
    url: str | None
    requested: str | None
    reason: str

    def describe(self) -> str:
        """One line for the log: what is used and why."""
        what = f"the local copy {self.given_path}" if self.kind == "local" else f"the download {self.url}"
        return f"data source: {what} ({self.reason})"


def fetch_dataset(
    dataset: str,
    raw_dir: str | os.PathLike,
    *,
    source: str | os.PathLike | None = AUTO,
    local_copy: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
    url: str | None = None,
    md5: str | None = None,
    kaggle_dataset: str = KAGGLE_BIRDS,
    kaggle_version: int | None = None,
    download_dir: str | os.PathLike | None = None,
    timeout: float = 60.0,
    retries: int = 4,
    progress: bool = True,
) -> dict:
    """Fetch `dataset` into `raw_dir` (replacing it) and return the fetch info.

    dataset: "cifar10" or "cifar100" (official python archive from `url`, checked against
        `md5`; both default to the official ones), "birds" (Kaggle `kaggle_dataset`, at
        `kaggle_version` or the latest) or "folder" (needs a local source).
    source: "auto" (default): `local_copy` when it exists, else the official download;
        None: always the official download; a path: that local copy (an error if missing).
        A local copy is the official CIFAR archive (its MD5 is checked before anything is
        unpacked), or a class-folder dataset as a directory or .tar.gz/.zip archive.
        Relative paths are resolved against `base_dir` (default: the current directory).
    local_copy: where this machine may keep a copy of the dataset (used by "auto").
    md5: expected MD5 of the archive (download or local); for class-folder archives
        it is optional.
    download_dir: where downloads are kept (resumable, reused when their checksum
        matches); default `<raw_dir>/../downloads`.

    Prints one line saying which source is used and why; fetch_info.json records it
    (`source`, see `source_record`), and `describe_source` turns it into a label.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if url is not None and dataset not in CIFAR_ARCHIVES:
        raise DataError(f"url only applies to cifar10/cifar100; for {dataset!r} give a local source instead")
    if kaggle_version is not None and (isinstance(kaggle_version, bool) or not isinstance(kaggle_version, int)
                                       or kaggle_version < 1):
        raise DataError(f"kaggle_version must be a positive integer or None (latest), got {kaggle_version!r}")
    resolved = resolve_source(dataset, source, base_dir, local_copy, url=url, kaggle_dataset=kaggle_dataset,
                              kaggle_version=kaggle_version)
    source_path = resolved.path
    if md5 is not None and source_path is not None and source_path.is_dir():
        raise DataError(f"md5 applies to an archive, but the source {source_path} is a directory")
    print(resolved.describe(), flush=True)

    raw_dir = Path(raw_dir)
    if source_path is not None and source_path.is_file():
        kept = _kept_fetch(raw_dir, dataset, resolved, file_digest(source_path, "md5"), md5)
        if kept is not None:
            print(f"{raw_dir} already holds this source, checked by content: kept as it is", flush=True)
            return kept
    download_dir = Path(download_dir) if download_dir is not None else raw_dir.parent / "downloads"
    info: dict = {"dataset": dataset, "source": None, "url": None, "md5": None}
    with staged_dir(raw_dir) as tmp:
        if dataset in CIFAR_ARCHIVES:
            used = _fetch_cifar(CIFAR_ARCHIVES[dataset], source_path, resolved.url, md5, download_dir, tmp, info,
                                timeout=timeout, retries=retries, progress=progress)
        elif source_path is None:  # birds from Kaggle
            used = _download_kaggle(kaggle_dataset, kaggle_version, download_dir, progress)
            info["kaggle"] = {"dataset": kaggle_dataset, "version": kaggle_version}
            info["md5"] = file_digest(used, "md5")
            if md5 is not None:
                check_md5(used, md5, f"Kaggle archive {used}")
            _lay_out_class_folders(used, tmp, info)
        else:
            used = source_path
            if source_path.is_file():
                info["md5"] = file_digest(source_path, "md5")
                if md5 is not None:
                    check_md5(source_path, md5, f"data source {source_path}")
            _lay_out_class_folders(source_path, tmp, info)
        info["source"] = source_record(resolved, used, info)
        (tmp / FETCH_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _kept_fetch(raw_dir: Path, dataset: str, resolved: ResolvedSource, source_md5: str,
                md5: str | None) -> dict | None:
    """The fetch info of `raw_dir` when it already holds exactly what fetching this local
    archive would write, else None (fetch then runs in full).

    Checked by content, so that a source or a raw folder changed in place is fetched again: the
    source's MD5 and sha256 against the recorded ones, and what raw_dir holds (the archive copy's
    MD5, or the unpacked CIFAR pickles' sha256) with nothing else beside it. Fetching a
    60,000-image archive again lists every member: the stage took 4.4 s on CIFAR-10's JPEGs,
    1.6 s when this check keeps data/raw (AMD EPYC, 2 cores).
    """
    if md5 is not None and md5.lower() != source_md5:
        return None  # the full fetch reports the mismatch
    try:
        info = json.loads((raw_dir / FETCH_INFO).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("dataset") != dataset or info.get("md5") != source_md5:
        return None
    if info.get("source") != source_record(resolved, resolved.path, info):
        return None
    if info.get("format") == "class-folder-archive":
        kept = info.get("archive")
        intact = (raw_dir / kept).is_file() and file_digest(raw_dir / kept, "md5") == source_md5
    elif info.get("format") == "cifar-python":
        kept = info.get("folder")
        folder = raw_dir / kept
        intact = folder.is_dir() and {f.name: file_digest(f, "sha256") for f in sorted(folder.iterdir())
                                      if f.is_file()} == info.get("pickle_sha256")
    else:
        return None
    return info if intact and sorted(os.listdir(raw_dir)) == sorted([FETCH_INFO, kept]) else None


def resolve_source(
    dataset: str,
    source: str | os.PathLike | None,
    base_dir: str | os.PathLike | None = None,
    local_copy: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    kaggle_dataset: str = KAGGLE_BIRDS,
    kaggle_version: int | None = None,
) -> ResolvedSource:
    """Decide where `dataset` comes from; copies and downloads nothing.

    source="auto": `local_copy` (resolved against `base_dir`) when it exists, else the
        official download. An explicit `url` (a mirror of the CIFAR archive) means the
        download: a URL written down is a stronger wish than a copy that happens to be there.
    source=None: the official download (or `url`).
    source=<path>: that path, resolved against `base_dir`; DataError if it does not exist.
        (A file literally named "auto" is "./auto".)
    The "folder" dataset has no download: it needs a path, or "auto" with a local copy.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    base = Path(base_dir or ".")
    requested = None if source is None else str(source)
    if source is not None and str(source) != AUTO:
        path = base / Path(source).expanduser()
        if not path.exists():
            raise DataError(f"data source {path} does not exist (source={str(source)!r}, resolved against "
                            f"{base.resolve()}); fix data.source, or set it to auto (a local copy if there is one, "
                            "else the download) or leave it empty to download")
        return ResolvedSource("local", path, str(source), None, requested, "named by data.source")

    if source is not None:  # auto
        if local_copy is not None and (base / Path(local_copy).expanduser()).exists() and url is None:
            return ResolvedSource("local", base / Path(local_copy).expanduser(), str(local_copy), None, requested,
                                  "source=auto and the local copy exists")
        if dataset == "folder":
            where = f"; the local copy {local_copy} does not exist" if local_copy is not None else ""
            raise DataError("dataset 'folder' needs a source (data.source): a directory or .tar.gz/.zip archive "
                            f"holding train/<class>/*, test/<class>/* and optionally valid/<class>/*{where}")
        if url is not None:
            reason = "source=auto and data.url names the archive to download"
        elif local_copy is not None:
            reason = f"source=auto and there is no local copy at {local_copy}"
        else:
            reason = f"source=auto and no local copy is configured for {dataset}"
    else:
        if dataset == "folder":
            raise DataError("dataset 'folder' needs a source (data.source): a directory or .tar.gz/.zip archive "
                            "holding train/<class>/*, test/<class>/* and optionally valid/<class>/*; it has "
                            "no download")
        reason = "data.source is empty: always the official download"
    if dataset in CIFAR_ARCHIVES:
        download_url = url or CIFAR_ARCHIVES[dataset].url
    else:
        download_url = f"https://www.kaggle.com/datasets/{kaggle_dataset}" + (
            f"/versions/{kaggle_version}" if kaggle_version is not None else "")
    return ResolvedSource("download", None, None, download_url, requested, reason)


def source_record(resolved: ResolvedSource, used: Path, info: dict) -> dict:
    """The `source` entry of fetch_info.json (copied into the manifest by preprocess).

    kind "local" | "download"; path (as given) or url; sha256 of the file used (the local
    file, or the downloaded archive) or, for a directory, of its sorted file list and
    contents (sha256_of says which); md5 of an archive; requested (the `source` argument:
    "auto", None or a path); reason; format (the raw layout); image_format ("JPEG", "PNG",
    ... the most common image file type of a class-folder dataset, None for CIFAR pickles);
    kaggle {dataset, version} for a Kaggle download.
    """
    record: dict = {"kind": resolved.kind}
    if resolved.kind == "local":
        record["path"] = resolved.given_path
    else:
        record["url"] = resolved.url
    if used.is_dir():
        record.update(sha256=directory_digest(used), sha256_of="directory: sorted relative paths and file contents")
    else:
        record.update(sha256=file_digest(used, "sha256"), sha256_of="file")
    record.update(md5=info.get("md5"), requested=resolved.requested, reason=resolved.reason,
                  format=info.get("format"), image_format=info.get("image_format"))
    if "kaggle" in info:
        record["kaggle"] = info["kaggle"]
    return record


def directory_digest(top: str | os.PathLike) -> str:
    """sha256 over a directory's files (symbolic links followed, as fetch copies them): each
    relative path (sorted, "/"-separated) and its contents' sha256; the same for the same files
    wherever the directory is."""
    top = Path(top)
    digest = hashlib.sha256()
    for entry in sorted(entry for entry in walk_directory(top)[0] if not entry.endswith("/")):
        digest.update(entry.encode() + b"\0")
        digest.update(bytes.fromhex(file_digest(top / entry, "sha256")))
    return digest.hexdigest()


def describe_source(manifest: dict) -> str:
    """A short human-readable label of where the data came from, for reports, e.g.
    "JPEG copy (../shared/data/cifar10-jpeg.tar.gz)" or "official archive (cs.toronto.edu)".

    Takes a manifest or a fetch info (both hold `source`), also those written before the
    source record existed.
    """
    record = manifest.get("source")
    dataset = manifest.get("dataset")
    if isinstance(record, dict) and "kind" in record:
        if record["kind"] == "download":
            if record.get("kaggle") or "kaggle.com" in (record.get("url") or ""):
                kaggle = record.get("kaggle") or {}
                name = kaggle.get("dataset") or (record.get("url") or "").split("/datasets/")[-1]
                version = kaggle.get("version")
                return f"Kaggle {name} ({'latest version' if version is None else f'version {version}'})"
            official = dataset in CIFAR_ARCHIVES and record.get("url") == CIFAR_ARCHIVES[dataset].url
            return f"{'official archive' if official else 'archive'} ({_host(record.get('url'))})"
        path = record.get("path")
        if record.get("format") == "cifar-python":
            return f"official archive, local copy ({path})"
        image_format = record.get("image_format")
        if dataset in CIFAR_ARCHIVES:
            return f"{image_format or 'class-folder'} copy ({path})"
        return f"{image_format + ' ' if image_format else ''}class folders ({path})"
    # written before the source record: {"source": path or None, "url": ..., "md5": ..., "kaggle": ...}
    old = record if isinstance(record, dict) else {"source": record}
    if old.get("source"):
        return f"local copy ({old['source']})"
    if old.get("kaggle"):
        return f"Kaggle {old['kaggle'].get('dataset')}"
    url = old.get("url") or manifest.get("url")
    return f"download ({_host(url)})" if url else "unknown source"


def _host(url: str | None) -> str:
    host = urlsplit(url or "").hostname or str(url)
    return host.removeprefix("www.")


def read_fetch_info(raw_dir: str | os.PathLike) -> dict:
    """The fetch info of a raw directory; DataError if it is not one."""
    path = Path(raw_dir) / FETCH_INFO
    if not path.is_file():
        raise DataError(f"{raw_dir} is not a fetched dataset ({FETCH_INFO} missing): run the fetch stage first")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- CIFAR


def _fetch_cifar(spec: CifarArchive, source: Path | None, url: str | None, md5: str | None,
                 download_dir: Path, out: Path, info: dict, **download_args) -> Path:
    """The official archive (downloaded, or a local copy), or a class-folder copy of CIFAR;
    returns the file or directory used (the download, or `source`)."""
    expected_md5 = (md5 or spec.md5).lower()
    if source is None:
        url = url or spec.url
        archive = download_file(url, download_dir / Path(urlsplit(url).path).name, md5=expected_md5,
                                **download_args)
        info.update(url=url, md5=expected_md5)
    elif source.is_file():
        official = _is_official_cifar_archive(source, spec)
        if official or md5 is not None:
            # never unpack an official archive (nor load its pickles) before its MD5 matched
            check_md5(source, expected_md5, f"data source {source}")
        if not official:  # a class-folder archive, e.g. CIFAR as JPEGs
            _check_cifar_classes(_lay_out_class_folders(source, out, info), spec, source)
            info["md5"] = file_digest(source, "md5")
            return source
        archive = source
        info["md5"] = expected_md5
    else:
        if (source / spec.folder).is_dir() or (source / "batches.meta").is_file() or (source / "meta").is_file():
            raise DataError(
                f"{source} is an extracted official CIFAR folder, which cannot be checked: give the "
                f"{Path(spec.url).name} archive itself as the source (its MD5 is checked before its pickles "
                "are loaded)")
        _check_cifar_classes(_lay_out_class_folders(source, out, info), spec, source)
        return source

    extract_archive(archive, out / ".extract")
    folder = out / ".extract" / spec.folder
    if not folder.is_dir():
        raise DataError(f"{archive} has no {spec.folder}/ folder: it is not the official CIFAR python archive")
    os.replace(folder, out / spec.folder)
    remove_tree(out / ".extract")
    info["format"] = "cifar-python"
    info["folder"] = spec.folder
    # preprocess checks these again before unpickling anything
    info["pickle_sha256"] = {f.name: file_digest(f, "sha256")
                             for f in sorted((out / spec.folder).iterdir()) if f.is_file()}
    return archive


def _is_official_cifar_archive(path: Path, spec: CifarArchive) -> bool:
    """Whether the archive's first member is in the official folder (reads one header, unpacks nothing)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()[:1]
        else:
            with tarfile.open(path, "r:*") as tf:
                first = tf.next()
                names = [first.name] if first else []
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return False
    return any(name.split("/")[0] == spec.folder for name in names)


def _check_cifar_classes(classes: list[str], spec: CifarArchive, source: Path) -> None:
    if spec.num_classes == 10 and classes != list(CIFAR10_CLASSES):
        raise DataError(f"{source}: a class-folder CIFAR-10 needs the folders {', '.join(CIFAR10_CLASSES)} "
                        f"(the official label order), found {', '.join(classes)}")
    if len(classes) != spec.num_classes:
        raise DataError(f"{source}: CIFAR with {spec.num_classes} classes expected, found {len(classes)} class folders")


# --------------------------------------------------------------------------- class folders


def _lay_out_class_folders(source: Path, out: Path, info: dict) -> list[str]:
    """Put a class-folder dataset into `out` (an archive as it is, a directory's split
    folders as copies) and return its class names."""
    if source.is_dir():
        entries, unfollowed = walk_directory(source)
    else:
        index = scan_archive(source)
        entries, unfollowed = index.entries, []
    root, split_folders = find_split_folders(entries, str(source))
    in_splits = {folder + "/" for folder in split_folders.values()}
    if source.is_dir():
        for entry in entries:
            relative = entry[len(root):]
            if entry.startswith(root) and any(relative.startswith(folder) for folder in in_splits):
                if entry.endswith("/"):
                    (out / relative).mkdir(parents=True, exist_ok=True)
                else:
                    shutil.copyfile(source / entry, out / relative)  # follows a link: the file itself
        info.update(format="class-folders", split_folders=split_folders)
    else:
        shutil.copyfile(source, out / source.name)
        info.update(format="class-folder-archive", archive=source.name, root=root, split_folders=split_folders)
    inside = [entry[len(root):] for entry in entries if entry.startswith(root)]
    # Recorded only when there are any, so that a dataset without them fetches byte for byte as before.
    skipped = [{"path": path[len(root):], "reason": reason} for path, reason in unfollowed
               if path.startswith(root) and any(path[len(root):].startswith(f) for f in in_splits)]
    ignored_folders = sorted({entry.split("/")[0] + "/" for entry in inside if "/" in entry
                              and entry.split("/")[0] + "/" not in in_splits and not _hidden(entry)})
    for folder in ignored_folders:
        print(f"ignoring {root}{folder}: not a split folder (train/, test/, or one of "
              f"{', '.join(name + '/' for name in VAL_FOLDERS)} for validation)", flush=True)
    info.update({key: value for key, value in (("skipped", skipped), ("ignored_folders", ignored_folders)) if value})
    info["image_format"] = _image_format(inside, split_folders)
    names = list_class_names(inside, split_folders)
    if not names:
        raise DataError(f"{source}: {root}{split_folders['train']}/ has no class folders; expected "
                        "train/<class>/<image files>")
    return names


IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WebP",
                 ".tif": "TIFF", ".tiff": "TIFF"}


def _image_format(entries: list[str], split_folders: dict[str, str]) -> str | None:
    """The most common image file type in the split folders ("JPEG"), by file name; None if none."""
    folders = set(split_folders.values())
    kinds = Counter(IMAGE_FORMATS.get(Path(entry).suffix.lower()) for entry in entries
                    if not entry.endswith("/") and entry.split("/")[0] in folders and not _hidden(entry))
    kinds.pop(None, None)
    return min(kinds, key=lambda kind: (-kinds[kind], kind)) if kinds else None


def walk_directory(top: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Files ("a/b.jpg") and folders ("a/") under `top`, named as archive listings name them,
    following symbolic links (a dataset may be a folder of links); and the links that cannot be
    followed, with why: a dangling one, or one to a folder above it (a loop)."""
    entries: list[str] = []
    unfollowed: list[tuple[str, str]] = []

    def visit(folder: Path, prefix: str, ancestors: frozenset[str]) -> None:
        for child in sorted(folder.iterdir(), key=lambda path: path.name):
            name = prefix + child.name
            if child.is_symlink() and not child.exists():
                unfollowed.append((name, "a symbolic link to nothing (its target does not exist)"))
            elif child.is_dir():
                real = os.path.realpath(child)
                if real in ancestors:
                    unfollowed.append((name + "/", "a symbolic link to a folder above it (a loop): not followed"))
                    continue
                entries.append(name + "/")
                visit(child, name + "/", ancestors | {real})
            elif child.is_file():
                entries.append(name)

    visit(top, "", frozenset({os.path.realpath(top)}))
    return entries, unfollowed


def _hidden(entry: str) -> bool:
    # .DS_Store, ._* and __MACOSX/ (macOS zips) are no part of a dataset
    parts = entry.rstrip("/").split("/")
    return parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


def find_split_folders(entries: list[str], what: str) -> tuple[str, dict[str, str]]:
    """The dataset root in a listing ("" or a prefix like "birds/": archives often wrap the
    data in a folder) and its split folders, e.g. {"train": "train", "test": "test", "val": "valid"}."""
    visible = [entry for entry in entries if not _hidden(entry)]
    roots = set()
    for entry in visible:
        parts = entry.split("/")
        for depth in range(min(len(parts) - 1, 4)):  # train/ at most 3 folders down
            if parts[depth].lower() == TRAIN_FOLDER:
                roots.add("".join(part + "/" for part in parts[:depth]))
                break
    if not roots:
        raise DataError(
            f"{what} has no train/ folder: a class-folder dataset needs train/<class>/* and test/<class>/* "
            "(valid/<class>/* is optional). For CIFAR in the official python format give the .tar.gz archive.")
    depth = min(root.count("/") for root in roots)
    shallowest = sorted(root for root in roots if root.count("/") == depth)
    if len(shallowest) > 1:
        raise DataError(f"{what} has several train/ folders (in {', '.join(shallowest)}); "
                        "point the source at the one to use")
    root = shallowest[0]
    folders = sorted({entry[len(root):].split("/")[0] for entry in visible if entry.startswith(root)
                      and "/" in entry[len(root):]})

    def named(*names: str) -> list[str]:  # the folders with one of these names, in any letter case
        return [folder for folder in folders if folder.lower() in names]

    for split, names in (("train", (TRAIN_FOLDER,)), ("test", (TEST_FOLDER,))):
        if len(named(*names)) > 1:
            raise DataError(f"{what} has {' and '.join(f'{root}{f}/' for f in named(*names))}: folder names "
                            f"differing only in letter case; keep one {split} folder")
    if not named(TEST_FOLDER):
        raise DataError(f"{what} has {root}{named(TRAIN_FOLDER)[0]}/ but no test/ folder beside it: a class-folder "
                        "dataset needs train/<class>/* and test/<class>/* (valid/<class>/* is optional); make a "
                        "test split")
    val_folders = named(*VAL_FOLDERS)
    if len(val_folders) > 1:
        raise DataError(f"{what} has {' and '.join(f + '/' for f in val_folders)} folders; keep one validation "
                        "folder")
    split_folders = {"train": named(TRAIN_FOLDER)[0], "test": named(TEST_FOLDER)[0]}
    if val_folders:
        split_folders["val"] = val_folders[0]
    return root, split_folders


@dataclass(frozen=True)
class ClassFolderListing:
    """A fetched class-folder dataset's split folders, relative to the dataset root.

    entries: visible files and folders ("train/cat/1.jpg", "train/cat/"), sorted;
    links: archive links among them -> the file each stands for (read that one);
    broken_links: archive links that stand for no file -> why;
    hidden_files: how many hidden files (.DS_Store, ._*) the split folders hold (not part of the data).
    """

    entries: list[str]
    links: dict[str, str]
    broken_links: dict[str, str]
    hidden_files: int


def class_folder_listing(raw_dir: str | os.PathLike, info: dict,
                         index: ArchiveIndex | None = None) -> ClassFolderListing:
    """List a fetched class-folder dataset (see ClassFolderListing); `index`: the archive's
    scan_archive, when the caller has it already."""
    raw_dir = Path(raw_dir)
    links, broken = {}, {}
    if info["format"] == "class-folder-archive":
        root = info["root"]
        index = index or scan_archive(raw_dir / info["archive"])
        entries = [entry[len(root):] for entry in index.entries if entry.startswith(root)]
        for link, target in index.links.items():
            if link.startswith(root):
                if target.startswith(root):
                    links[link[len(root):]] = target[len(root):]
                else:
                    broken[link[len(root):]] = f"a link in the archive to {target!r}, outside the dataset folder"
        broken.update({link[len(root):]: why for link, why in index.broken_links.items() if link.startswith(root)})
    else:
        entries = walk_directory(raw_dir)[0]
    folders = set(info["split_folders"].values())
    in_splits = [entry for entry in entries if "/" in entry and entry.split("/")[0] in folders]
    return ClassFolderListing(sorted(entry for entry in in_splits if not _hidden(entry)), links, broken,
                              sum(1 for entry in in_splits if _hidden(entry) and not entry.endswith("/")))


def list_class_names(entries: list[str], split_folders: dict[str, str]) -> list[str]:
    """The class folder names in train/, sorted: the class order, label i = class_names[i]."""
    train = split_folders["train"] + "/"
    return sorted({entry.split("/")[1] for entry in entries if entry.startswith(train)
                   and entry.count("/") >= 2 and not _hidden(entry)})


# --------------------------------------------------------------------------- Kaggle


def kaggle_config_dir() -> Path:
    """The folder where the kaggle package looks for kaggle.json (same rules as the package)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    home_dir = Path("~/.kaggle").expanduser()
    if sys.platform.startswith("linux") and not home_dir.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()
        return Path(xdg) / "kaggle"
    return home_dir


def find_kaggle_credentials() -> str | None:
    """Where Kaggle credentials were found (a description, never the secret), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "the KAGGLE_API_TOKEN environment variable"
    kaggle_json = kaggle_config_dir() / "kaggle.json"
    from_file = {}
    if kaggle_json.is_file():
        try:
            from_file = json.loads(kaggle_json.read_text())
        except (OSError, ValueError):
            from_file = None
        if not isinstance(from_file, dict):
            raise DataError(f'{kaggle_json} is not a JSON object; it should hold {{"username": ..., "key": ...}}')
    # As in the kaggle package, the environment and the file may each give one of the two.
    username = os.environ.get("KAGGLE_USERNAME") or from_file.get("username")
    key = os.environ.get("KAGGLE_KEY") or from_file.get("key")
    if username and key:
        return f"KAGGLE_USERNAME/KAGGLE_KEY (environment or {kaggle_json})"
    for name in ("access_token", "access_token.txt", "credentials.json"):  # token file, `kaggle auth login`
        path = Path("~/.kaggle").expanduser() / name
        if path.is_file():
            return str(path)
    return None


def kaggle_credentials_help() -> str:
    return (
        "Kaggle credentials not found. The birds dataset is downloaded from Kaggle and needs an API token "
        "(create one at https://www.kaggle.com/settings, section API). Provide it in one of these ways:\n"
        "  - environment: KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN;\n"
        f"  - file: {kaggle_config_dir() / 'kaggle.json'} holding {{\"username\": ..., \"key\": ...}} "
        "(chmod 600; KAGGLE_CONFIG_DIR moves this folder), or ~/.kaggle/access_token.\n"
        "Or skip Kaggle: point data.source at a local copy of the dataset (a directory or .zip with "
        "train/, valid/ and test/ class folders).")


def _download_kaggle(dataset: str, version: int | None, download_dir: Path, progress: bool) -> Path:
    """Download the Kaggle dataset's zip (the kaggle package resumes partial downloads)."""
    where = find_kaggle_credentials()
    if where is None:
        raise DataError(kaggle_credentials_help())
    ref = dataset if version is None else f"{dataset}/versions/{version}"
    target = download_dir / (dataset.replace("/", "__") + (f"-v{version}" if version else "-latest"))
    try:
        # Imported here: importing kaggle authenticates at once, and exits when it cannot.
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
        api.dataset_download_files(ref, path=str(target), quiet=not progress, unzip=False)
    except SystemExit:
        raise DataError(f"Kaggle did not accept the credentials from {where} (or could not be reached to "
                        "check them). Renew the token, or point data.source at a local copy.") from None
    except Exception as e:
        raise DataError(f"Kaggle download of {ref} failed ({type(e).__name__}: {e}). If this machine is "
                        "offline, point data.source at a local copy of the dataset.") from e
    archive = target / (dataset.split("/")[-1] + ".zip")
    if not archive.is_file():
        raise DataError(f"Kaggle download of {ref} finished but {archive} is missing")
    return archive
