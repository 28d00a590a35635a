"""The one schema of params.yaml (pipeline/common/settings.py) and conf/ that declares its keys.

Every key that `dvc exp run -S` may set is declared in conf/ (Hydra refuses the others
without `+`), and the schema refuses anything else with the key's name and the valid ones.
"""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump
from hypothesis import HealthCheck, given, settings, strategies as st

from lightcnn.models import MODEL_NAMES
from pipeline.common.params import ParamsError, StageParams, declared_params, load_params, validate
from pipeline.common.settings import Params, PerModelSettings, TrainSettings
from tests.conftest import PROJECT_ROOT


def compose(tmp_path, overrides: list[str]) -> dict:
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(PROJECT_ROOT / "conf"), None, "config", str(PROJECT_ROOT), overrides)
    return yaml.safe_load(out.read_text())


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


def schema_keys(model) -> set[str]:
    return set(model.model_fields)


def test_conf_declares_exactly_the_schema_keys(tmp_path):
    params = compose(tmp_path, [])
    assert set(params) == schema_keys(Params)
    assert set(params["train"]) == schema_keys(TrainSettings)
    assert set(params["per_model"]) == set(MODEL_NAMES)
    for model in MODEL_NAMES:
        assert set(params["per_model"][model]) == schema_keys(PerModelSettings), model
    for section in ("data", "export", "benchmark", "report", "model"):
        assert set(params[section]) == schema_keys(Params.model_fields[section].annotation), section


def test_params_yaml_is_the_composition_of_conf(tmp_path):
    """params.yaml must be what `dvc exp run` would compose from conf/ (else edits are lost)."""
    assert compose(tmp_path, []) == yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def test_a_per_model_key_is_set_without_plus_and_only_for_that_model(tmp_path):
    params = compose(tmp_path, ["per_model.our_small.learning_rate=0.002", "per_model.our_large.epochs=3"])
    validate(params)
    assert params["per_model"]["our_small"]["learning_rate"] == 0.002
    assert params["per_model"]["our_large"]["epochs"] == 3
    assert params["per_model"]["mobilenetv3_small"]["learning_rate"] is None
    assert params["per_model"]["our_small"]["epochs"] is None


def test_compose_refuses_a_list_for_the_model_group_which_would_keep_only_its_last_entry(tmp_path):
    from pipeline.compose import refuse_several_model_options

    # What it guards against: Hydra merges the options' files, the last `selected` wins.
    assert compose(tmp_path, ["model=[our_small,our_large]"])["model"]["selected"] == ["our_large"]
    with pytest.raises(ParamsError, match=r"model\.selected=\[our_small,our_large\]"):
        refuse_several_model_options(["train.epochs=3", "model=[our_small,our_large]"])
    refuse_several_model_options(["model=our_small", "model.selected=[our_small,our_large]"])


def test_hydra_refuses_a_misspelled_key(tmp_path):
    with pytest.raises(Exception, match="epoch"):
        compose(tmp_path, ["train.epoch=5"])


@pytest.mark.parametrize("dotted, value, expected", [
    ("model.selected", ["resnet"], "model.selected.0: must be one of"),
    ("model.selected", [], "model.selected"),
    ("data.dataset", "imagenet", "data.dataset: must be one of"),
    ("data.val_fraction", 1.5, "data.val_fraction"),
    ("train.recipe", "fast", "recipe"),
    ("train.epochs", 0, "epochs"),
    ("train.batch_size", -1, "batch_size"),
    ("train.seeds", [], "train.seeds"),
    ("train.seeds", [1, "two"], "train.seeds.1"),
    ("per_model.our_small.epochs", -1, "per_model.our_small"),
    ("per_model.our_small.attention", "transformer", "attention"),
    ("benchmark.runs", 10, "benchmark.runs"),
    ("benchmark.threads", [0], "benchmark.threads.0"),
    ("export.representative_images", "many", "export.representative_images"),
    ("data.image_size", 8, "data.image_size: input should be greater than or equal to 16"),
    ("data.num_classes", 1, "data.num_classes: input should be greater than or equal to 2"),
])
def test_bad_values_fail_naming_their_key(good, dotted, value, expected):
    with pytest.raises(ParamsError) as info:
        validate(broken(good, dotted, value))
    assert expected in str(info.value)


def test_misspelled_keys_are_named_with_a_suggestion_and_the_valid_ones(good):
    params = copy.deepcopy(good)
    params["train"]["epoch"] = params["train"].pop("epochs")
    params["per_model"]["our_small"]["lerning_rate"] = 0.1
    params["trian"] = {}
    with pytest.raises(ParamsError) as info:
        validate(params)
    message = str(info.value)
    assert "train.epoch: unknown key (did you mean 'epochs'?); allowed: " in message
    allowed = message.split("train.epoch: unknown key (did you mean 'epochs'?); allowed: ")[1].split("\n")[0]
    assert {"seeds", "recipe", "epochs", "learning_rate", "model_mode"} <= set(allowed.split(", "))
    assert "per_model.our_small.lerning_rate: unknown key (did you mean 'learning_rate'?)" in message
    assert "trian: unknown key (did you mean 'train'?)" in message


def test_every_problem_is_reported_at_once(good):
    params = broken(broken(good, "data.dataset", "mnist"), "train.batch_size", -1)
    with pytest.raises(ParamsError) as info:
        validate(params)
    assert "data.dataset" in str(info.value) and "batch_size" in str(info.value)


LEAVES = [("model", "selected")] + [(section, key) for section in ("data", "train", "export", "benchmark", "report")
                                    for key in Params.model_fields[section].annotation.model_fields]
JUNK = st.one_of(st.text(max_size=8), st.floats(allow_nan=True), st.integers(-10**6, 10**6), st.booleans(),
                 st.none(), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leaf=st.sampled_from(LEAVES), value=JUNK)
def test_any_junk_value_is_refused_by_name_or_accepted_never_a_traceback(good, leaf, value):
    """Property: a generated value for any key either validates or fails as a ParamsError naming the key."""
    section, key = leaf
    params = broken(good, f"{section}.{key}", value)
    try:
        validate(params)
    except ParamsError as exc:
        assert f"{section}.{key}" in str(exc) or section == "train" and key in str(exc), str(exc)


def test_stage_params_refuse_a_key_the_stage_does_not_declare(good):
    view = StageParams("benchmark@our_small-42", good, {"benchmark": dict(good["benchmark"])})
    assert view["benchmark.threads"] == good["benchmark"]["threads"]
    assert view["benchmark"] == good["benchmark"]
    with pytest.raises(ParamsError, match=r"reads 'train.epochs', which its `params:` in dvc.yaml does not declare"):
        view["train.epochs"]
    partial = StageParams("report", good, {"model": {"selected": []}, "train": {"seeds": [42]}})
    assert partial["train.seeds"] == good["train"]["seeds"]
    with pytest.raises(ParamsError, match="does not declare"):
        partial["train"]  # the whole section holds keys the stage did not declare


def test_declared_params_are_dvc_yaml_s_resolved_for_the_stage(tmp_path):
    """The keys a stage may read: dvc.yaml's `params:` for that stage with DVC's templates
    resolved (a matrix item's per_model.<model>), valued from params.yaml; a declared key that
    params.yaml lacks is named, as is a stage DVC does not know."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    model, seed = params["model"]["selected"][0], params["train"]["seeds"][0]
    train = declared_params(f"train@{model}-{seed}")
    assert train[f"per_model.{model}"] == params["per_model"][model]
    assert train["train.epochs"] == params["train"]["epochs"] and "data.image_size" not in train
    assert declared_params("preprocess") == {f"data.{key}": params["data"][key] for key in
                                              ("image_size", "val_fraction", "max_per_class", "num_classes", "seed")}
    with pytest.raises(ParamsError, match="stage 'no-such-stage'"):
        declared_params("no-such-stage")

    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")  # a DVC project without git
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "true", "params": ["data.nope"]}}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"seed": 1}}))
    with pytest.raises(ParamsError, match=r"stage s declares param 'data.nope' in dvc.yaml, which params.yaml does"):
        declared_params("s", tmp_path)


@pytest.mark.parametrize("stage", ["train", "evaluate", "export"])  # the stages that load Keras
def test_a_stage_fails_fast_on_bad_params(tmp_path, stage):
    """A stage validates before any work: one clear message on stderr, no traceback, exit 2,
    and before the seconds of importing Keras and TensorFlow (Python's -X importtime lists
    every module the process imported)."""
    for package in ("pipeline", "lightcnn"):
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["train"]["batch_size"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", f"pipeline.{stage}", "our_small", "42"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    messages = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert "pipeline.common.params" in imported and not {"keras", "tensorflow"} & imported
    assert any("train.batch_size" in line for line in messages) and "Traceback" not in proc.stderr
    assert not (tmp_path / "models").exists()  # nothing was started


@pytest.mark.parametrize("dotted, value, hinted", [
    ("train.learning_rate", "1e-3", True),   # YAML 1.1 reads 1e-3 as a string
    ("data.image_size", "24x40", False),     # text, but no number in e-notation: no such hint
])
def test_the_e_notation_hint_only_where_it_applies(good, dotted, value, hinted):
    with pytest.raises(ParamsError) as info:
        validate(broken(good, dotted, value))
    assert ("YAML reads" in str(info.value)) is hinted, str(info.value)


def test_compose_refuses_before_writing_and_names_what_it_refuses(tmp_path):
    """pipeline.compose validates what it composed before it replaces params.yaml: a refused
    value leaves the file as it was (it used to be written, then refused with a traceback)."""
    from pipeline.compose import compose as compose_params

    target = tmp_path / "params.yaml"
    target.write_text("the previous params\n")
    with pytest.raises(ParamsError, match=r"benchmark.runs: input should be greater than or equal to 200"):
        compose_params(["benchmark.runs=10"], target=target)
    assert target.read_text() == "the previous params\n" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(ParamsError, match=r"train.epoch: unknown key \(did you mean 'epochs'\?\); allowed: seeds, "):
        compose_params(["train.epoch=5"], target=target)
    assert compose_params(["train.epochs=3"], target=target)["train"]["epochs"] == 3
    assert yaml.safe_load(target.read_text())["train"]["epochs"] == 3


def test_compose_on_the_command_line_refuses_a_typo_without_a_traceback():
    """Hydra refuses a key conf/ does not declare before anything is written (params.yaml is
    not touched); the command says so in the schema's words, with the valid keys."""
    before = (PROJECT_ROOT / "params.yaml").read_bytes()
    result = subprocess.run([sys.executable, "-m", "pipeline.compose", "data.imagesize=32"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "data.imagesize: unknown key (did you mean 'image_size'?); allowed: dataset, source" in result.stderr
    assert "params.yaml was left as it was" in result.stderr
    assert (PROJECT_ROOT / "params.yaml").read_bytes() == before
