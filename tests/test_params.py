"""params.yaml validation: each bad value fails at once, naming its key and what is allowed."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.params import ParamsError, load_params, validate
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def good() -> dict:
    return load_params(PROJECT_ROOT / "params.yaml")


def broken(good: dict, dotted: str, value) -> dict:
    params = copy.deepcopy(good)
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value
    return params


@pytest.mark.parametrize("dotted, value, expected", [
    ("model.selected", ["resnet"], "model.selected item 'resnet' must be one of: mobilenetv3_large, mobilenetv3_small, our_large, our_small"),
    ("model.selected", [], "model.selected must be a non-empty list"),
    ("data.dataset", "imagenet", "data.dataset must be one of: cifar10, cifar100, birds, folder"),
    ("train.recipe", "fast", "recipe"),
    ("train.epochs", 0, "epochs"),
    ("train.epochs", -5, "epochs"),
    ("train.batch_size", 0, "batch_size"),
    ("per_model.our_small.epochs", -1, "per_model.our_small"),
    ("per_model.our_small.attention", "transformer", "attention"),
    ("data.val_fraction", 1.5, "data.val_fraction must be a number strictly between 0 and 1"),
    ("benchmark.runs", 10, "benchmark.runs must be an integer of at least 200"),
    ("benchmark.threads", [0], "benchmark.threads item 0 must be a positive integer"),
])
def test_bad_values_fail_with_their_message(good, dotted, value, expected):
    with pytest.raises(ParamsError) as info:
        validate(broken(good, dotted, value))
    assert expected in str(info.value)


def test_bad_recipe_and_epochs_messages_list_allowed_values(good):
    with pytest.raises(ParamsError) as info:
        validate(broken(good, "train.recipe", "fast"))
    assert "default" in str(info.value) and "study" in str(info.value)


def test_misspelled_keys_are_named_with_a_suggestion(good):
    params = copy.deepcopy(good)
    params["train"]["epoch"] = params["train"].pop("epochs")
    params["data"]["datset"] = "cifar10"
    params["trian"] = {}
    with pytest.raises(ParamsError) as info:
        validate(params)
    message = str(info.value)
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in message
    assert "data.datset: unknown key (did you mean 'dataset'?)" in message
    assert "trian: unknown key (did you mean 'train'?)" in message


def test_every_problem_is_reported_at_once(good):
    params = broken(broken(good, "data.dataset", "mnist"), "train.batch_size", -1)
    with pytest.raises(ParamsError) as info:
        validate(params)
    assert "data.dataset" in str(info.value) and "batch_size" in str(info.value)


def test_params_yaml_is_the_composition_of_conf(tmp_path):
    """params.yaml must be what `dvc exp run` would compose from conf/ (else edits are lost)."""
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(PROJECT_ROOT / "conf"), None, "config", str(PROJECT_ROOT), [])
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def test_a_stage_fails_fast_on_bad_params(tmp_path):
    """A stage validates before any work: one clear message on stderr, no traceback, exit 2."""
    for package in ("pipeline", "lightcnn"):
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["train"]["batch_size"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "pipeline.train", "our_small"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "batch_size" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()  # nothing was started
