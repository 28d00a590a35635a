"""fetch_dataset (+ preprocess) on official-format CIFAR archives served over HTTP, on the real
CIFAR-10 JPEGs and bird images in ../shared/data, and the Kaggle credential check."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightcnn.data import (
    DataError,
    describe_source,
    fetch_dataset,
    find_kaggle_credentials,
    preprocess_dataset,
    resolve_source,
)
from lightcnn.data.fetch import directory_digest
from lightcnn.data.pipeline import read_examples
from tests.conftest import BIRDS_SAMPLE, CIFAR10_JPEG, PROJECT_ROOT
from tests.data_helpers import (
    RangeServer,
    build_cifar10_archive,
    build_cifar100_archive,
    build_class_tree,
    extract_real_cifar_subset,
    md5_of,
)

QUIET = dict(progress=False)
OFFICIAL_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _records(processed, split):
    return {path: (image, label) for image, label, path in read_examples(processed, split)}


# --------------------------------------------------------------------------- official CIFAR archives over HTTP


def test_cifar10_official_archive_downloads_and_keeps_its_labels(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    expected = build_cifar10_archive(archive, per_class_per_batch=2, test_per_class=3)
    with RangeServer({"/kriz/cifar-10-python.tar.gz": archive.read_bytes()},
                     drop_once={"/kriz/cifar-10-python.tar.gz"}) as server:
        url = server.url + "/kriz/cifar-10-python.tar.gz"
        info = fetch_dataset("cifar10", tmp_path / "data/raw", url=url, md5=md5_of(archive),
                             retries=2, **QUIET)
    assert any(r is not None for _, r, _ in server.requests)  # the dropped download was resumed
    assert info["url"] == url and info["md5"] == md5_of(archive) and info["format"] == "cifar-python"
    assert (tmp_path / "data/downloads/cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert json.loads((tmp_path / "data/raw/fetch_info.json").read_text()) == info
    # with no local copy configured, "auto" (the default) downloads; the record says so
    assert info["source"] == {
        "kind": "download", "url": url, "sha256": sha256_of(archive), "sha256_of": "file", "md5": md5_of(archive),
        "requested": "auto", "reason": "source=auto and data.url names the archive to download",
        "format": "cifar-python", "image_format": None}

    manifest = preprocess_dataset(tmp_path / "data/raw", tmp_path / "data/processed", **QUIET)
    assert manifest["source"] == info["source"]
    assert describe_source(manifest) == "archive (127.0.0.1)"  # not the official URL: a mirror
    assert manifest["image_size_reason"] == "CIFAR native 32x32"
    assert manifest["class_names"] == ["airplane", "automobile", "bird", "cat", "deer",
                                       "dog", "frog", "horse", "ship", "truck"]
    assert manifest["image_size"] == [32, 32]
    # 5 batches x 2 per class = 10 train images per class, of which round(10 * 0.2) = 2 go to val
    assert set(manifest["counts"]["train"].values()) == {8}
    assert set(manifest["counts"]["val"].values()) == {2}
    assert set(manifest["counts"]["test"].values()) == {3}
    seen = {}
    for split in ("train", "val", "test"):
        seen.update(_records(tmp_path / "data/processed", split))
    assert seen.keys() == expected.keys()
    for path, (image, label) in seen.items():
        source_image, source_label = expected[path]
        assert label == source_label, path
        np.testing.assert_array_equal(image, source_image)  # PNG is lossless, no resize at 32x32


def test_cifar100_official_archive_keeps_fine_labels_and_records_coarse_ones(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    expected = build_cifar100_archive(archive, train_per_class=5, test_per_class=1)
    with RangeServer({"/cifar-100-python.tar.gz": archive.read_bytes()}) as server:
        fetch_dataset("cifar100", tmp_path / "raw", url=server.url + "/cifar-100-python.tar.gz",
                      md5=md5_of(archive), download_dir=tmp_path / "dl", **QUIET)
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", **QUIET)
    assert manifest["num_classes"] == 100 and manifest["class_names"][7] == "fine07"
    assert manifest["coarse_class_names"] == [f"coarse{i:02d}" for i in range(20)]
    assert manifest["coarse_label_of_class"] == [f % 20 for f in range(100)]
    assert manifest["splits"]["train"]["num_examples"] == 400 and manifest["splits"]["val"]["num_examples"] == 100
    records = _records(tmp_path / "processed", "test")
    assert len(records) == 100
    for path, (image, label) in records.items():
        assert label == expected[path][1]
        np.testing.assert_array_equal(image, expected[path][0])


@pytest.mark.parametrize("layout", ["class-folder-archive", "cifar-python"])
def test_an_unchanged_local_archive_is_kept_and_any_change_fetches_again(tmp_path, capsys, layout):
    """fetch runs on every `dvc repro` (dvc.yaml keeps data/raw while it runs): the raw folder
    is kept when both the source and the raw folder hold what a fetch would write, checked by
    content; a change to either, or a stray file, fetches again."""
    raw = tmp_path / "raw"
    if layout == "cifar-python":
        archive, dataset = tmp_path / "cifar-10-python.tar.gz", "cifar10"

        def build(seed: int) -> None:
            build_cifar10_archive(archive, per_class_per_batch=1, test_per_class=1, seed=seed)
    else:
        archive, dataset = tmp_path / "source.tar.gz", "folder"

        def build(seed: int) -> None:
            tree = tmp_path / f"tree-{seed}"
            build_class_tree(tree, {"a": 2, "b": 2}, test_per_class=1, seed=seed)
            with tarfile.open(archive, "w:gz") as tar:
                for split in ("train", "test"):
                    tar.add(tree / split, arcname=split)

    def fetch() -> tuple[dict, str]:
        capsys.readouterr()
        info = fetch_dataset(dataset, raw, source=archive, md5=md5_of(archive), **QUIET)
        return info, capsys.readouterr().out

    build(0)
    first, _ = fetch()
    kept = raw / (first.get("archive") or first.get("folder"))
    files = sorted(p for p in kept.rglob("*") if p.is_file()) if kept.is_dir() else [kept]
    inodes = [f.stat().st_ino for f in files]
    again, printed = fetch()
    assert "kept as it is" in printed and again == first
    assert [f.stat().st_ino for f in files] == inodes  # not copied again

    with open(files[-1], "ab") as file:  # the raw folder changed in place
        file.write(b"x")
    repaired, printed = fetch()
    assert "kept as it is" not in printed and repaired == first
    assert fetch()[1].count("kept as it is") == 1

    (raw / "stray.txt").write_text("not from the source")
    assert "kept as it is" not in fetch()[1] and not (raw / "stray.txt").exists()

    build(1)  # the source replaced in place
    changed, printed = fetch()
    assert "kept as it is" not in printed and changed["md5"] == md5_of(archive) != first["md5"]


def test_local_official_archive_with_wrong_md5_is_never_unpacked(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    build_cifar10_archive(archive, per_class_per_batch=1, test_per_class=1)
    official_md5 = "c58f30108f718f92721af3b95e74349a"
    with pytest.raises(DataError, match=f"checksum mismatch for data source .*expected {official_md5}"):
        fetch_dataset("cifar10", tmp_path / "raw", source=archive, **QUIET)  # default: the official MD5
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cifar-10-python.tar.gz"]  # no temp dirs left


def test_a_pickle_that_would_run_code_is_refused_even_with_a_matching_md5(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    archive = tmp_path / "cifar-10-python.tar.gz"
    build_cifar10_archive(archive, per_class_per_batch=1, test_per_class=1)
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": RunsCode()})
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    info = fetch_dataset("cifar10", tmp_path / "raw", source=evil, md5=md5_of(evil), **QUIET)  # the user vouched
    assert info["format"] == "cifar-python"
    with pytest.raises(DataError, match="posix.system|os.system"):
        preprocess_dataset(tmp_path / "raw", tmp_path / "processed", **QUIET)
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- real data from ../shared/data


def test_real_cifar10_jpegs_go_through_fetch_and_preprocess(shared_data, tmp_path):
    # source is given relative to base_dir, as data.source is relative to the project root
    source = os.path.relpath(CIFAR10_JPEG, tmp_path)
    info = fetch_dataset("cifar10", tmp_path / "raw", source=source, base_dir=tmp_path, **QUIET)
    assert info["format"] == "class-folder-archive" and info["root"] == ""
    assert info["md5"] == md5_of(CIFAR10_JPEG)
    assert info["source"] == {
        "kind": "local", "path": source, "sha256": sha256_of(CIFAR10_JPEG), "sha256_of": "file",
        "md5": md5_of(CIFAR10_JPEG), "requested": source, "reason": "named by data.source",
        "format": "class-folder-archive", "image_format": "JPEG"}
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", max_per_class=30, **QUIET)
    assert manifest["source"] == info["source"] and describe_source(manifest) == f"JPEG copy ({source})"
    assert manifest["image_size"] == [32, 32] and manifest["image_size_reason"] == "CIFAR native 32x32"

    assert manifest["class_names"][:3] == ["airplane", "automobile", "bird"]
    for split, n in (("train", 24), ("val", 6), ("test", 30)):
        assert manifest["counts"][split] == {name: n for name in manifest["class_names"]}
        assert manifest["splits"][split]["num_examples"] == 10 * n
    assert manifest["skipped"] == []
    sampled = {}
    for split in ("train", "val", "test"):
        records = list(read_examples(tmp_path / "processed", split))
        assert len(records) == manifest["splits"][split]["num_examples"]
        for image, label, path in records:
            folder_split, class_name, file_name = path.split("/")
            assert manifest["class_names"][label] == class_name
            assert folder_split == ("test" if split == "test" else "train")
            assert int(Path(file_name).stem) < 30  # max_per_class keeps the first files in sorted order
        sampled.update({path: image for image, _, path in records[::20]})
    with tarfile.open(CIFAR10_JPEG) as tar:  # the source JPEGs, decoded independently
        for member in tar:
            if member.name in sampled:
                with Image.open(tar.extractfile(member)) as source_image:
                    np.testing.assert_array_equal(sampled.pop(member.name), np.asarray(source_image.convert("RGB")))
    assert not sampled  # every sampled record was compared


def _kaggle_like_birds(tmp_path: Path) -> tuple[Path, list[str]]:
    """The shared sample has only valid/ (20 species x 5 images). Lay it out like the Kaggle
    dataset: per species, images 1-3 -> train/, 4 -> valid/, 5 -> test/."""
    sample = tmp_path / "sample"
    with tarfile.open(BIRDS_SAMPLE) as tar:
        tar.extractall(sample, filter="data")
    species = sorted(d.name for d in (sample / "valid").iterdir())
    tree = tmp_path / "birds-tree"
    for name in species:
        for number, split in ((1, "train"), (2, "train"), (3, "train"), (4, "valid"), (5, "test")):
            target = tree / split / name / f"{number}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample / "valid" / name / f"{number}.jpg", target)
    return tree, species


def test_bird_sample_as_kaggle_birds_from_a_zip(shared_data, tmp_path):
    tree, species = _kaggle_like_birds(tmp_path)
    archive = tmp_path / "100-bird-species.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # wrapped in a top folder, beside a csv, as Kaggle versions are
        zf.writestr("birds/birds.csv", "class id,filepaths\n")
        for path in sorted(tree.rglob("*.jpg")):
            zf.write(path, "birds/" + path.relative_to(tree).as_posix())
    with pytest.raises(DataError, match="checksum mismatch for data source"):
        fetch_dataset("birds", tmp_path / "raw", source=archive, md5="0" * 32, **QUIET)
    info = fetch_dataset("birds", tmp_path / "raw", source=archive, md5=md5_of(archive), **QUIET)
    assert info["md5"] == md5_of(archive) and info["source"]["path"] == str(archive)
    assert info["split_folders"] == {"train": "train", "test": "test", "val": "valid"} and info["root"] == "birds/"
    # the archive is kept as it is and read in place
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["100-bird-species.zip", "fetch_info.json"]

    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", num_classes=10, **QUIET)
    assert manifest["class_names"] == species[:10]  # the first N species in sorted order
    assert manifest["image_size"] == [224, 224] and manifest["image_size_reason"] == "the bird study's 224x224"
    assert describe_source(manifest) == f"JPEG class folders ({archive})"
    assert manifest["validation"]["val_fraction"] is None and "valid/" in manifest["validation"]["source"]
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        assert manifest["counts"][split] == {name: n for name in species[:10]}
    image, label, path = next(read_examples(tmp_path / "processed", "val"))
    assert path == f"valid/{species[label]}/4.jpg"
    with Image.open(tree / path) as source_image:
        np.testing.assert_array_equal(image, np.asarray(source_image.convert("RGB")))


def test_bird_sample_as_a_folder_dataset_resized(shared_data, tmp_path):
    tree, species = _kaggle_like_birds(tmp_path)
    fetch_dataset("folder", tmp_path / "raw", source=tree, **QUIET)
    manifest = preprocess_dataset(tmp_path / "raw", tmp_path / "processed", image_size=[48, 64], **QUIET)
    assert manifest["num_classes"] == 20 and manifest["image_size"] == [48, 64]
    image, label, path = next(read_examples(tmp_path / "processed", "test"))
    assert image.shape == (48, 64, 3) and path == f"test/{species[label]}/5.jpg"
    with Image.open(tree / "test" / species[label] / "5.jpg") as source_image:
        resized = source_image.convert("RGB").resize((64, 48), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(image, np.asarray(resized))


def test_bird_sample_as_shipped_has_no_train_split_and_says_so(shared_data, tmp_path):
    with pytest.raises(DataError, match="no train/ folder.*test/<class>"):
        fetch_dataset("folder", tmp_path / "raw", source=BIRDS_SAMPLE, **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the temporary directory is gone


def test_class_folder_archive_with_a_member_escaping_it_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "dataset.zip", "w") as zf:
        for name in ("train/cat/1.jpg", "test/cat/1.jpg", "train/cat/../../../escaped.jpg"):
            zf.writestr(name, b"image bytes")
    with pytest.raises(DataError, match="escaped.jpg.*outside the target directory"):
        fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "dataset.zip", **QUIET)
    assert not (tmp_path / "raw").exists()


def test_folder_without_test_split_is_refused(tmp_path):
    (tmp_path / "tree/train/cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no test/ folder"):
        fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "tree", **QUIET)


def test_cifar10_class_folders_must_have_the_official_class_names(cifar10_subset, tmp_path):
    extract_real_cifar_subset(cifar10_subset, tmp_path / "tree", per_class=1)
    (tmp_path / "tree/train/airplane").rename(tmp_path / "tree/train/plane")
    with pytest.raises(DataError, match="needs the folders airplane, automobile"):
        fetch_dataset("cifar10", tmp_path / "raw", source=tmp_path / "tree", **QUIET)


# --------------------------------------------------------------------------- which source: auto, None, a path


def test_auto_uses_the_local_copy_when_it_is_there_and_says_why(tmp_path, capsys):
    archive = tmp_path / "copies" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    build_cifar10_archive(archive, per_class_per_batch=1, test_per_class=1)
    # relative to base_dir, as the pipeline passes ../shared/data/... against the project root
    info = fetch_dataset("cifar10", tmp_path / "raw", local_copy="copies/cifar-10-python.tar.gz", base_dir=tmp_path,
                         md5=md5_of(archive), download_dir=tmp_path / "downloads", **QUIET)
    assert capsys.readouterr().out.splitlines() == [
        "data source: the local copy copies/cifar-10-python.tar.gz (source=auto and the local copy exists)"]
    assert info["source"]["kind"] == "local" and info["source"]["path"] == "copies/cifar-10-python.tar.gz"
    assert info["source"]["requested"] == "auto" and info["source"]["sha256"] == sha256_of(archive)
    assert info["format"] == "cifar-python" and not (tmp_path / "downloads").exists()  # nothing downloaded
    assert describe_source(info) == "official archive, local copy (copies/cifar-10-python.tar.gz)"


def test_auto_without_the_local_copy_downloads_and_none_always_downloads(tmp_path):
    (tmp_path / "copy.tar.gz").write_bytes(b"a local copy")
    missing = resolve_source("cifar10", "auto", tmp_path, "nowhere/cifar10-jpeg.tar.gz")
    assert (missing.kind, missing.url, missing.path) == ("download", OFFICIAL_CIFAR10_URL, None)
    assert missing.reason == "source=auto and there is no local copy at nowhere/cifar10-jpeg.tar.gz"
    assert "download https://www.cs.toronto.edu" in missing.describe()
    present = resolve_source("cifar10", "auto", tmp_path, "copy.tar.gz")
    assert (present.kind, present.path, present.requested) == ("local", tmp_path / "copy.tar.gz", "auto")
    never_local = resolve_source("cifar10", None, tmp_path, "copy.tar.gz")
    assert never_local.kind == "download" and never_local.requested is None and "always" in never_local.reason
    mirror = resolve_source("cifar100", "auto", tmp_path, "copy.tar.gz", url="https://mirror.example/c.tar.gz")
    assert mirror.kind == "download" and mirror.url == "https://mirror.example/c.tar.gz"  # a url written down wins
    named = resolve_source("folder", "copy.tar.gz", tmp_path)
    assert (named.kind, named.given_path, named.requested) == ("local", "copy.tar.gz", "copy.tar.gz")
    birds = resolve_source("birds", "auto", tmp_path, None, kaggle_version=3)
    assert birds.url == "https://www.kaggle.com/datasets/gpiosenka/100-bird-species/versions/3"
    assert birds.reason == "source=auto and no local copy is configured for birds"
    assert not (tmp_path / "raw").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["copy.tar.gz"]


def test_describe_source_labels_each_kind_including_old_manifests():
    def label(dataset, **record):
        return describe_source({"dataset": dataset, "source": record})

    assert label("cifar10", kind="download", url=OFFICIAL_CIFAR10_URL, format="cifar-python") == \
        "official archive (cs.toronto.edu)"
    assert label("birds", kind="download", url="https://www.kaggle.com/datasets/gpiosenka/100-bird-species",
                 kaggle={"dataset": "gpiosenka/100-bird-species", "version": None}) == \
        "Kaggle gpiosenka/100-bird-species (latest version)"
    assert label("folder", kind="local", path="data/mnist", format="class-folders", image_format="PNG") == \
        "PNG class folders (data/mnist)"
    # manifests written before the source record existed still get a label
    assert label("cifar10", source="../shared/data/cifar10-jpeg.tar.gz", url=None, md5="x") == \
        "local copy (../shared/data/cifar10-jpeg.tar.gz)"
    assert label("cifar10", source=None, url=OFFICIAL_CIFAR10_URL, md5="x") == "download (cs.toronto.edu)"


def test_a_directory_source_is_recorded_with_a_digest_of_its_files(tmp_path):
    for copy in ("one", "two"):
        build_class_tree(tmp_path / copy, {"cat": 2, "dog": 2}, size=8)
    info = fetch_dataset("folder", tmp_path / "raw", source=tmp_path / "one", **QUIET)
    assert info["source"]["sha256"] == directory_digest(tmp_path / "one") == directory_digest(tmp_path / "two")
    assert info["source"]["sha256_of"].startswith("directory") and info["source"]["image_format"] == "PNG"
    (tmp_path / "two/test/dog/000.png").write_bytes(b"changed")
    assert directory_digest(tmp_path / "two") != directory_digest(tmp_path / "one")


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar11'"):
        fetch_dataset("cifar11", tmp_path / "raw")
    with pytest.raises(DataError, match="'folder' needs a source"):
        fetch_dataset("folder", tmp_path / "raw")  # auto, and no local copy
    with pytest.raises(DataError, match="'folder' needs a source.*the local copy gone/ does not exist"):
        fetch_dataset("folder", tmp_path / "raw", local_copy="gone/", base_dir=tmp_path)
    with pytest.raises(DataError, match="'folder' needs a source.*no download"):
        fetch_dataset("folder", tmp_path / "raw", source=None)
    with pytest.raises(DataError, match=r"data source .*nowhere\.tar\.gz does not exist"):
        fetch_dataset("cifar10", tmp_path / "raw", source="nowhere.tar.gz", base_dir=tmp_path)
    with pytest.raises(DataError, match="kaggle_version must be a positive integer"):
        fetch_dataset("birds", tmp_path / "raw", kaggle_version="latest")


# --------------------------------------------------------------------------- Kaggle credentials


def _no_kaggle_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(home / "kaggle-config"), XDG_CONFIG_HOME=str(home / ".config"))
    return env


def test_missing_kaggle_credentials_give_one_clear_error_without_exit_traceback(tmp_path):
    script = (
        "import sys\n"
        "from lightcnn.data import fetch_dataset\n"
        "try:\n"
        f"    fetch_dataset('birds', {str(tmp_path / 'raw')!r}, kaggle_version=3)\n"
        "finally:\n"
        "    print('kaggle imported:', 'kaggle' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=_no_kaggle_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "kaggle imported: False" in result.stdout
    assert "lightcnn.data.download.DataError: Kaggle credentials not found" in result.stderr
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in result.stderr and "data.source" in result.stderr
    assert "SystemExit" not in result.stderr
    assert not (tmp_path / "raw").exists()


def test_kaggle_credentials_are_found_where_kaggle_looks_and_never_echoed(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "conf"))
    assert find_kaggle_credentials() is None
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert find_kaggle_credentials() is None  # a user name alone is not enough
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/kaggle.json").write_text(json.dumps({"username": "someone", "key": "s3cr3t-key"}))
    where = find_kaggle_credentials()
    assert where is not None and str(tmp_path / "conf/kaggle.json") in where and "s3cr3t" not in where
    (tmp_path / "conf/kaggle.json").write_text("{not json")
    with pytest.raises(DataError, match="kaggle.json is not a JSON object"):
        find_kaggle_credentials()
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token-value")
    assert "token-value" not in find_kaggle_credentials()
