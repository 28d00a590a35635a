"""Check in a real browser that the MLflow UI shows the pipeline's runs as a training project.

    python benchmarks/mlflow_ui_check.py       # writes docs/images/mlflow_ui_{default,runs,run}.png
    python benchmarks/mlflow_ui_check.py --out-dir /tmp/shots --keep-store /tmp/ui-store

What it does:
1. Creates a temporary sqlite MLflow store and records two runs exactly as the pipeline does
   (pipeline.common.tracking.ModelRun.open with a small manifest of lightcnn.data's shape,
   params, per-epoch curves and test metrics, then finish).
2. Starts `mlflow server` on 127.0.0.1 (a free port) over that store.
3. Takes headless Chromium screenshots (1400x900 PNGs of a 1750x1125 page at 0.8 scale, so
   that the runs table's Source column fits beside MLflow's assistant panel):
   - mlflow_ui_default.png: the experiment as a fresh browser opens it;
   - mlflow_ui_runs.png: the experiment's runs table (`?workflowType=machine_learning`);
   - mlflow_ui_run.png: one run's page.
   It also reads each rendered page's text and prints what it found.
4. Stops the server.

Found with MLflow 3.17.2: the UI no longer reads the experiment tag `mlflow.experimentKind`
to choose its view. The view is a browser-wide switch (GenAI | Model training, top left),
taken from the URL parameter `workflowType` or else the browser's localStorage
(`mlflow.workflowType`), and it defaults to GenAI. So a fresh browser opens every experiment
on the GenAI overview; `?workflowType=machine_learning` in the URL, or one click on
"Model training" (remembered by the browser), opens the runs table.

Needs Chromium (not a Python package; not needed by CI or the tests). On Debian/Ubuntu:
`apt-get update && apt-get install -y chromium`; or set CHROMIUM to a Chrome/Chromium executable.
Exit status: 0 when the screenshots were written and the pages show what they should,
1 when a page lacks something (printed), 2 when Chromium or the MLflow server is missing or fails.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lightcnn.io import atomic_path  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = ("Chromium was not found. Install it (Debian/Ubuntu: `apt-get update && apt-get install -y chromium`) "
                "or set CHROMIUM to a Chrome/Chromium executable. It is needed only by this script.")
SERVER_START_TIMEOUT_S = 120
# A 1750x1125 CSS page drawn at 0.8 scale: a 1400x900 PNG in which the runs table shows its
# Source column beside the assistant panel that MLflow 3.17 opens on the right.
WINDOW_SIZE, SCALE = "1750,1125", "0.8"
ML_VIEW = "workflowType=machine_learning"  # the UI's "Model training" view (see the docstring)
VIRTUAL_TIME_BUDGET_MS = 15000  # the UI is a React app that fetches its data after loading: give it time
EXPERIMENT_NAME = "cifar10"     # tracking.experiment_name() of the manifest below
RUNS = [("our_small", 42, {"test_accuracy": 0.8402, "test_top5_accuracy": 0.9911}),
        ("our_large", 42, {"test_accuracy": 0.8531, "test_top5_accuracy": 0.9925})]


def fake_manifest() -> dict:
    """A manifest of lightcnn.data.preprocess's shape, small enough to read at a glance."""
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return {
        "format_version": 1,
        "dataset": "cifar10",
        "class_names": class_names,
        "num_classes": len(class_names),
        "image_size": [32, 32],
        "image_size_reason": "the dataset's own size",
        "splits": {"train": {"num_examples": 40000}, "val": {"num_examples": 10000},
                   "test": {"num_examples": 10000}},
        "params": {"image_size": [32, 32], "val_fraction": 0.2, "max_per_class": None, "num_classes": None,
                   "seed": 42},
        "source": {"kind": "local", "path": "../shared/data/cifar10-jpeg.tar.gz",
                   "sha256": "5" * 64, "sha256_of": "file", "md5": None, "requested": "auto",
                   "reason": "auto: the local copy exists", "format": "class-folder archive",
                   "image_format": "JPEG"},
    }


def record_runs(manifest: dict) -> list[str]:
    """Two runs recorded the way pipeline/train.py and pipeline/record.py record them; their ids."""
    from pipeline.common import tracking

    run_ids = []
    for model, seed, test_metrics in RUNS:
        run = tracking.ModelRun.open(model, seed, manifest)
        run.log_params({"model": model, **tracking.flatten("train", {
            "recipe": "default", "epochs": 3, "batch_size": 128, "optimizer": "adamw", "learning_rate": 0.002,
            "seed": seed})})
        run.set_tags({"lightcnn.trained": "true"})
        for epoch in range(1, 4):
            run.log_metrics({"accuracy": 0.5 + 0.1 * epoch, "loss": 1.6 - 0.3 * epoch,
                             "val_accuracy": 0.45 + 0.1 * epoch, "val_loss": 1.7 - 0.3 * epoch}, step=epoch)
        run.log_metrics(test_metrics)
        run.finish()
        run_ids.append(run.run_id)
    return run_ids


class Unavailable(Exception):
    """Chromium or the MLflow server is missing or fails: nothing could be checked."""


def find_chromium() -> str:
    candidates = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else list(CHROMIUM_NAMES)
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise Unavailable(INSTALL_HINT)


def ui_source_label(tags: dict[str, str]) -> str:
    """The text MLflow's UI shows for a run's source (Utils.formatSource in the MLflow 3.17 UI)."""
    name = tags.get("mlflow.source.name", "")
    if tags.get("mlflow.source.type") == "PROJECT":
        label = re.sub(r"(.*[^/])\.[^/.]+$", r"\1", name.split("/")[-1])  # basename, extension dropped
        entry_point = tags.get("mlflow.project.entryPoint", "")
        return f"{label}:{entry_point}" if entry_point and entry_point != "main" else label
    return name.split("/")[-1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, port: int, log_path: Path) -> subprocess.Popen:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if mlflow is None:
        raise Unavailable("mlflow is not installed in this environment (pip install -e . installs it)")
    with open(log_path, "wb") as log:
        # Its own session, so that stopping it stops the workers it forks too (and nothing else).
        server = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
             "--artifacts-destination", str(store / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=store, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as the README's
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return server
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(1)
    stop(server)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    raise Unavailable(f"mlflow server did not come up on port {port} within {SERVER_START_TIMEOUT_S} s:\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def chromium(executable: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         f"--window-size={WINDOW_SIZE}", f"--force-device-scale-factor={SCALE}", f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", *args],
        capture_output=True, timeout=180)


def screenshot(executable: str, profile: Path, url: str, target: Path) -> None:
    with atomic_path(target, suffix=".png") as tmp:
        result = chromium(executable, profile, f"--screenshot={tmp}", url)
        if result.returncode != 0 or tmp.stat().st_size == 0:
            raise Unavailable(f"Chromium could not take a screenshot of {url} (exit {result.returncode}):\n"
                             + result.stderr.decode(errors="replace")[-2000:])
        tmp.chmod(0o644)  # mkstemp made it private; it is a published image
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB) from {url}")


def page_text(executable: str, profile: Path, url: str) -> str:
    """The rendered page's visible text (tags dropped), as Chromium sees it after the time budget."""
    dom = chromium(executable, profile, "--dump-dom", url).stdout.decode(errors="replace")
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def check_page(name: str, text: str, expected: dict[str, str], unexpected: dict[str, str]) -> list[str]:
    """Problems of one page: each `expected` text missing, each `unexpected` text present (with why)."""
    problems = [f"{name}: {why} (no {needle!r} on the page)" for needle, why in expected.items()
                if needle.lower() not in text.lower()]
    problems += [f"{name}: {why} ({needle!r} on the page)" for needle, why in unexpected.items()
                 if needle.lower() in text.lower()]
    return problems


GENAI_OVERVIEW = ("Observability", "Sessions", "Judges")  # side navigation of the GenAI view


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "docs" / "images",
                        help="where the mlflow_ui_*.png screenshots go (default docs/images)")
    parser.add_argument("--keep-store", type=Path, default=None,
                        help="record into this folder and keep it (default: a temporary folder, removed)")
    args = parser.parse_args()
    try:
        return check(args.out_dir, args.keep_store)
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def check(out_dir: Path, keep_store: Path | None) -> int:
    executable = find_chromium()
    store = keep_store or Path(tempfile.mkdtemp(prefix="mlflow-ui-check-"))
    store.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.chdir(store)  # MLflow's default artifact location is relative to the working directory
    out_dir = out_dir.resolve() if out_dir.is_absolute() else (PROJECT_ROOT / out_dir).resolve()
    run_ids = record_runs(fake_manifest())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    run = client.get_run(run_ids[0])
    tags = run.data.tags
    dataset = run.inputs.dataset_inputs[0].dataset if run.inputs.dataset_inputs else None
    source_label = ui_source_label(tags)
    print(f"experiment {experiment.name} ({experiment.experiment_id}) tags: {experiment.tags}")
    print(f"run {run.info.run_name} ({run.info.run_id}): source tags "
          f"{ {k: v for k, v in tags.items() if k.startswith(('mlflow.source', 'mlflow.project'))} }, "
          f"shown as {source_label!r}; dataset inputs "
          f"{[(d.dataset.name, d.dataset.digest, d.dataset.source_type) for d in run.inputs.dataset_inputs]}")

    port = free_port()
    server = start_server(store, port, store / "server.log")
    problems: list[str] = []
    notes: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}"
        pages = {"default": base, "runs": f"{base}?{ML_VIEW}", "run": f"{base}/runs/{run_ids[0]}?{ML_VIEW}"}
        texts = {}
        for name, url in pages.items():
            profile = store / f"chromium-profile-{name}"  # a fresh browser each time: no remembered view
            screenshot(executable, profile, url, out_dir / f"mlflow_ui_{name}.png")
            texts[name] = page_text(executable, profile, url)
        if all(word in texts["default"] for word in GENAI_OVERVIEW) and "Run Name" not in texts["default"]:
            notes.append("a fresh browser opens the experiment on MLflow's GenAI overview, not on its runs: "
                         f"MLflow {_mlflow_version()} takes the view from the URL (?{ML_VIEW}) or the browser's "
                         "remembered choice (\"Model training\", top left), not from the experimentKind tag")
        expected_runs = {f"{model} seed {seed}": "the runs table does not list this run" for model, seed, _ in RUNS}
        if dataset is None:
            problems.append("the run has no dataset input (ModelRun.log_dataset)")
        else:
            expected_runs[f"{dataset.name} ({dataset.digest})"] = "the Dataset column is empty"
        problems += check_page("runs table", texts["runs"], {
            "Run Name": "no runs table", "Dataset": "no Dataset column", "Source": "no Source column",
            source_label: "the Source column is empty", **expected_runs}, {})
        problems += check_page("run page", texts["run"], {
            "Datasets": "no Datasets section", source_label: "no source",
            tags.get("mlflow.source.git.commit", "?")[:6]: "no source commit"}, {})
        name = tags.get("mlflow.source.name", "")
        shown_name = ui_source_label({**tags, "mlflow.project.entryPoint": ""})  # the label less ":<entry point>"
        if "://" not in name and shown_name != name.split("/")[-1]:
            problems.append(f"the UI shows the source name {name!r} as {source_label!r}: for source type PROJECT "
                            "it drops everything after the last '.' of the name's last path part")
    finally:
        stop(server)
        if keep_store is None:
            shutil.rmtree(store, ignore_errors=True)
    for note in notes:
        print("NOTE:", note)
    for problem in problems:
        print("PROBLEM:", problem)
    print("the runs table and run page show the runs, their dataset and source" if not problems
          else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _mlflow_version() -> str:
    import mlflow

    return mlflow.__version__


if __name__ == "__main__":
    sys.exit(main())
