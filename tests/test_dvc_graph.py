"""dvc.yaml cannot drift from the code: every stage declares each project file it imports and
each param it may read, and nothing else.

Imports are measured, not guessed: each stage module is imported in a fresh interpreter and
the project files in sys.modules are compared with the stage's resolved `deps`. Params are
enforced at run time by pipeline.common.params.StageParams (tests/test_settings.py) and
audited against what each stage really reads in the end-to-end test.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dvc.repo import Repo

from pipeline.common.settings import TrainSettings
from tests.conftest import PROJECT_ROOT

PROBE = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
         "print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)})))")


@pytest.fixture(scope="module")
def stages() -> list:
    with Repo(str(PROJECT_ROOT)) as repo:
        return [(stage.addressing, stage.cmd, [dep.def_path for dep in stage.deps if dep not in stage.params],
                 [key for dep in stage.params for key in dep.params]) for stage in repo.index.stages]


def stage_module(cmd: str) -> str:
    words = cmd.split()
    assert words[:2] == ["python", "-m"], f"stage command {cmd!r}: expected `python -m pipeline.<stage>`"
    return words[2]


def project_files_imported(module: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, module], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout.strip().splitlines()[-1])
    root = str(PROJECT_ROOT) + "/"
    return {f[len(root):] for f in files if f.startswith(root) and "/.venv/" not in f and not f.startswith(root + ".venv")}


@pytest.fixture(scope="module")
def imports(stages) -> dict[str, set[str]]:
    modules = sorted({stage_module(cmd) for _, cmd, _, _ in stages})
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(modules, pool.map(project_files_imported, modules)))


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_imported_project_file_is_a_dependency_of_its_stage(stages, imports):
    missing = {}
    for name, cmd, deps, _ in stages:
        lacking = sorted(f for f in imports[stage_module(cmd)] if not covered(f, deps))
        if lacking:
            missing[name] = lacking
    assert not missing, f"add these to the stages' deps in dvc.yaml: {missing}"


def test_no_stage_depends_on_project_code_it_does_not_import(stages, imports):
    extra = {}
    for name, cmd, deps, _ in stages:
        used = imports[stage_module(cmd)]
        code_deps = [d for d in deps if d.startswith(("lightcnn", "pipeline"))]
        unused = [d for d in code_deps if not any(covered(f, [d]) for f in used)]
        if unused:
            extra[name] = unused
    assert not extra, f"these deps are never imported by their stage: {extra}"


def test_the_stage_command_module_is_among_its_deps(stages):
    for name, cmd, deps, _ in stages:
        module_file = stage_module(cmd).replace(".", "/") + ".py"
        assert module_file in deps, f"{name}: {module_file} is not in its deps"


def test_train_stages_declare_every_training_setting_but_the_seed_list(stages):
    wanted = {f"train.{key}" for key in TrainSettings.model_fields if key != "seeds"}
    for name, _, _, params in stages:
        if name.startswith("train@"):
            keys = set(params)
            model = name.split("@")[1].rsplit("-", 1)[0]
            assert wanted | {f"per_model.{model}"} == keys, name


def test_a_local_source_is_checked_by_content_on_every_run():
    """fetch reruns every time (always_changed) and compares the source's checksum itself."""
    import yaml

    fetch = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["fetch"]
    assert fetch.get("always_changed") is True
