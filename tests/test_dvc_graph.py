"""dvc.yaml cannot drift from the code: every stage declares each project file it imports and
each param it may read, and nothing else.

Imports are measured, not guessed: each stage module is imported in its own process and the
project files in sys.modules are compared with the stage's resolved `deps`. The processes are
forked, one per stage, from one interpreter that first imports the heavy third-party libraries
every stage pays for (numpy, TensorFlow, Keras) and no project file (checked): each stage still
starts with no project module loaded, so its measured set is its own, and the libraries are
imported once instead of once per stage. Params are
enforced at run time by pipeline.common.params.StageParams (tests/test_settings.py) and
audited against what each stage really reads in the end-to-end test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from dvc.repo import Repo

from pipeline.common.settings import TrainSettings
from tests.conftest import PROJECT_ROOT

# Run as `python -c PROBE ROOT MODULE...`; prints one JSON object: the project files loaded
# before any fork (must be none) and, per module, the files in sys.modules of a child process
# forked from that state after importing only that module (or the child's traceback).
PROBE = r"""
import importlib, json, os, sys, traceback
root = sys.argv[1].rstrip("/") + "/"
def project_files():
    files = {m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    return sorted(f for f in files if f.startswith(root) and not f.startswith(root + ".venv/"))
def all_files():
    return sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
import numpy, tensorflow, keras  # third-party: paid once here instead of once per stage
result = {"preloaded": project_files(), "modules": {}}
for module in sys.argv[2:]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            importlib.import_module(module)
            answer = {"files": all_files()}
        except BaseException:
            answer = {"error": traceback.format_exc()}
        with os.fdopen(write_end, "w") as pipe:
            json.dump(answer, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    result["modules"][module] = json.loads(text) if text else {"error": f"child exited with status {status}"}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def stages() -> list:
    with Repo(str(PROJECT_ROOT)) as repo:
        return [(stage.addressing, stage.cmd, [dep.def_path for dep in stage.deps if dep not in stage.params],
                 [key for dep in stage.params for key in dep.params]) for stage in repo.index.stages]


def stage_module(cmd: str) -> str:
    words = cmd.split()
    assert words[:2] == ["python", "-m"], f"stage command {cmd!r}: expected `python -m pipeline.<stage>`"
    return words[2]


def project_files_imported(modules: list[str]) -> dict[str, set[str]]:
    """{module: project files (relative paths) that importing it alone loads}."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(PROJECT_ROOT), *modules], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["preloaded"] == [], "the probe's shared imports must load no project file"
    root = str(PROJECT_ROOT) + "/"
    imported = {}
    for module in modules:
        answer = result["modules"][module]
        assert "error" not in answer, f"importing {module}: {answer.get('error')}"
        imported[module] = {f[len(root):] for f in answer["files"]
                            if f.startswith(root) and not f.startswith(root + ".venv/")}
    return imported


@pytest.fixture(scope="module")
def imports(stages) -> dict[str, set[str]]:
    return project_files_imported(sorted({stage_module(cmd) for _, cmd, _, _ in stages}))


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
