"""A temporary git copy of the project with quick settings, for the end-to-end DVC tests."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT

# Quick settings, written into the copy's conf/config.yaml (not passed as overrides) so that
# `dvc exp run -S ...`, which composes params.yaml from conf/ again, keeps them.
QUICK = {
    "data": {"max_per_class": 12},
    "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 32},
    "export": {"representative_images": 16, "eval_images": 60},
    "benchmark": {"threads": [1], "warmup": 2, "runs": 200},
    "report": {"gradcam_images": 4},
}


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def make_project(root: Path, *, source: Path, models: list[str], seeds: list[int],
                 extra_env: dict | None = None) -> dict:
    """Copy the working tree (tracked + untracked, not ignored) to `root` as a fresh git repo,
    reading its data from `source` (data.source) with the quick settings above."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = PROJECT_ROOT / name
        if src.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "PYTEST_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", TF_CPP_MIN_LOG_LEVEL="3",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@localhost", **(extra_env or {}))
    conf = yaml.safe_load((root / "conf" / "config.yaml").read_text())
    for section, values in QUICK.items():
        conf[section].update(values)
    conf["data"]["source"] = str(source)
    conf["train"]["seeds"] = seeds
    conf["defaults"] = [{"model": "quick"}, "_self_"]
    (root / "conf" / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    (root / "conf" / "model" / "quick.yaml").write_text(yaml.safe_dump({"selected": models}))
    run([sys.executable, "-m", "pipeline.compose"], root, env)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        run(cmd, root, env)
    return env


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a sqlite store, started and stopped by the tests."""

    def __init__(self, store: Path, cwd: Path, env: dict):
        self.store, self.cwd, self.env = store, cwd, env
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        self.process = subprocess.Popen(
            ["mlflow", "server", "--backend-store-uri", f"sqlite:///{self.store}", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--artifacts-destination", str(self.store.parent / "server-artifacts")],
            # Without MLflow 3's job runner (GenAI features), as the README starts it: 8 processes fewer.
            cwd=self.cwd, env={**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5):
                    return self
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read().decode()[-3000:]
                assert time.time() < deadline, "mlflow server did not answer within 90 s"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
