"""The README results table, generated from the committed run folders (never typed).

    python benchmarks/results_table.py            # rewrite README.md between the markers
    python benchmarks/results_table.py --check    # exit 1 if README.md is out of date
    python benchmarks/results_table.py --print    # print the table only

    # Record a finished run as docs/results/<name>/ (run.json + copies of its metrics files
    # from metrics/models/<model>/seed-<seed>/; settings from its train.json's config):
    python benchmarks/results_table.py record --name our_small-study-150ep-2026-12-01 \\
        --what "our_small, study recipe, all of CIFAR-10" --model our_small --seed 42 \\
        --command "dvc exp run -S model=our_small -S train.recipe=study" --wall-seconds 21600 \\
        --training-data "CIFAR-10, JPEG copy (../shared/data/cifar10-jpeg.tar.gz), 40,000 train / 10,000 val"

    # Publish a latency measurement of benchmarks/bench_latency.py as docs/latency/<name>/:
    python benchmarks/results_table.py record-latency --name 2026-11-26-trained \
        --what "the four models trained on CIFAR-10, idle machine"

    # Publish a run of benchmarks/gpu_comparison.py (its --output comparison.json and --log-dir
    # logs in one folder) as docs/gpu/<name>/:
    python benchmarks/results_table.py record-gpu --from gpu-out --name 2026-11-27-h200-cifar10-30ep \
        --what "..." --command "..." --machine "NVIDIA H200, 16 CPU cores" --software "JAX 0.11.2, Keras 3.15.1" \
        --training-data "..." --recipe "default: ..."

    # Suite timings are recorded by the script that measures them:
    python benchmarks/suite_time.py --record 2026-11-27-epyc-avx512

The tables sit between their markers in README.md (`<!-- results-table:begin -->` ...);
lightcnn/results.py describes the run folders (RUN_FORMAT), lightcnn/latency_record.py the
latency folders, lightcnn/gpu_record.py the GPU comparison folders and
lightcnn/suite_record.py the suite timings; the README's latency and GPU tables come from the
newest of theirs, the suite-time table from all.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lightcnn import gpu_record, latency_record, results, suite_record  # noqa: E402

DEFAULT_README = PROJECT_ROOT / "README.md"
DEFAULT_RESULTS_DIR = PROJECT_ROOT / "docs" / "results"
DEFAULT_LATENCY_DIR = PROJECT_ROOT / "docs" / "latency"
DEFAULT_GPU_DIR = PROJECT_ROOT / "docs" / "gpu"
DEFAULT_SUITE_DIR = PROJECT_ROOT / "docs" / "suite-time"
DEFAULT_BENCH_OUT = PROJECT_ROOT / "benchmarks" / "results"


def _git_commit(workspace: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(workspace), "rev-parse", "HEAD"], check=True, capture_output=True,
                             text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"cannot read the git commit of {workspace} ({error}); pass --git-commit") from error
    return out.stdout.strip()


# The pipeline's per-run metrics files (metrics/models/<model>/seed-<seed>/) and the kinds
# lightcnn.results copies them as (<model>.train.json, <model>.json, ...).
PIPELINE_METRICS_FILES = {"train": "train.json", "eval": "eval.json", "tflite": "tflite.json",
                          "latency": "latency.json"}


def record(args: argparse.Namespace) -> None:
    import yaml

    workspace = Path(args.workspace).resolve()
    metrics_dir = workspace / (args.metrics_dir or f"metrics/models/{args.model}/seed-{args.seed}")
    files = {kind: metrics_dir / name for kind, name in PIPELINE_METRICS_FILES.items()}
    missing = [str(files[kind]) for kind in results.REQUIRED_METRICS if not files[kind].is_file()]
    if missing:
        raise SystemExit(f"missing metrics file(s): {', '.join(missing)} (check --metrics-dir)")
    train = json.loads(files["train"].read_text())
    config = train.get("config")  # the effective training settings, model_mode included
    if not isinstance(config, dict):
        raise SystemExit(f"{files['train']} has no 'config' (the effective training settings): was it written "
                         "by this project's train stage?")
    if train.get("seed", args.seed) != args.seed:
        raise SystemExit(f"{files['train']} is the run of seed {train['seed']}, not {args.seed}")
    mode = args.mode or config.get("model_mode")
    if mode is None:
        raise SystemExit(f"{files['train']} names no model_mode: pass --mode")
    data = (yaml.safe_load((workspace / "params.yaml").read_text()) or {}).get("data") or {}
    num_classes = args.num_classes or {"cifar10": 10, "cifar100": 100}.get(data.get("dataset"))
    if num_classes is None:
        raise SystemExit(f"dataset {data.get('dataset')!r}: pass --num-classes")
    run = {
        "name": args.name, "what": args.what, "model": args.model, "mode": mode, "provenance": "measured",
        "command": args.command, "params": {"train": config, "data": data, "mode": mode}, "seed": args.seed,
        "training_data": args.training_data, "dataset": data.get("dataset"), "num_classes": num_classes,
        "git_commit": args.git_commit or _git_commit(workspace), "cpu": results.cpu_description(),
        "wall_seconds": args.wall_seconds, "date": args.date or datetime.date.today().isoformat(),
    }
    if args.notes:
        run["notes"] = args.notes
    folder = results.record_run(args.results_dir, run, {kind: path for kind, path in files.items() if path.is_file()})
    print(f"recorded {folder}; now run `python benchmarks/results_table.py` and commit both")


def record_latency(args: argparse.Namespace) -> None:
    record = {"name": args.name, "what": args.what, "command": args.command,
              "git_commit": args.git_commit or _git_commit(PROJECT_ROOT),
              "date": args.date or datetime.date.today().isoformat()}
    folder = latency_record.record_latency(args.latency_dir, args.source, record)
    print(f"recorded {folder}; now run `python benchmarks/results_table.py` and commit both")


def record_gpu(args: argparse.Namespace) -> None:
    record = {"name": args.name, "what": args.what, "command": args.command,
              "git_commit": args.git_commit or _git_commit(PROJECT_ROOT),
              "date": args.date or datetime.date.today().isoformat(), "machine": args.machine,
              "software": args.software, "training_data": args.training_data, "recipe": args.recipe}
    if args.notes:
        record["notes"] = args.notes
    folder = gpu_record.record_gpu_comparison(args.gpu_dir, args.source, record)
    print(f"recorded {folder}; now run `python benchmarks/results_table.py` and commit both")


def gpu_table(gpu_dir: Path) -> tuple[str, str, str]:
    """The README's GPU section from the newest comparison in gpu_dir, with its markers."""
    shown = gpu_dir.relative_to(PROJECT_ROOT) if gpu_dir.is_relative_to(PROJECT_ROOT) else gpu_dir
    return (gpu_record.GPU_BEGIN_MARK, gpu_record.GPU_END_MARK,
            gpu_record.render_gpu_section(gpu_record.latest_gpu_comparison(gpu_dir), str(shown)))


def suite_table(suite_dir: Path) -> tuple[str, str, str]:
    """The README's suite-time table from every timing recorded in suite_dir, with its markers."""
    shown = suite_dir.relative_to(PROJECT_ROOT) if suite_dir.is_relative_to(PROJECT_ROOT) else suite_dir
    return (suite_record.SUITE_BEGIN_MARK, suite_record.SUITE_END_MARK,
            suite_record.render_suite_section(suite_record.load_records(suite_dir), str(shown)))


def latency_tables(latency_dir: Path) -> list[tuple[str, str, str]]:
    """The README's latency tables from the newest measurement in latency_dir, with their markers."""
    measurement = latency_record.latest_latency(latency_dir)
    shown = latency_dir.relative_to(PROJECT_ROOT) if latency_dir.is_relative_to(PROJECT_ROOT) else latency_dir
    return [(latency_record.LATENCY_BEGIN_MARK, latency_record.LATENCY_END_MARK,
             latency_record.render_latency_section(measurement, str(shown))),
            (latency_record.LEVERS_BEGIN_MARK, latency_record.LEVERS_END_MARK,
             latency_record.render_levers_section(measurement))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=DEFAULT_README)
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--latency-dir", type=Path, default=DEFAULT_LATENCY_DIR)
    parser.add_argument("--gpu-dir", type=Path, default=DEFAULT_GPU_DIR)
    parser.add_argument("--suite-dir", type=Path, default=DEFAULT_SUITE_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is out of date")
    parser.add_argument("--print", action="store_true", help="print the table, change nothing")
    commands = parser.add_subparsers(dest="command_name")
    rec = commands.add_parser("record", help="record a finished run as a run folder")
    rec.add_argument("--name", required=True)
    rec.add_argument("--what", required=True, help="what the run is, in a few words")
    rec.add_argument("--model", required=True)
    rec.add_argument("--seed", type=int, required=True)
    rec.add_argument("--metrics-dir", default=None,
                     help="the run's metrics folder, relative to --workspace "
                          "(default metrics/models/<model>/seed-<seed>)")
    rec.add_argument("--command", required=True, help="the command that produced the run")
    rec.add_argument("--training-data", required=True, help="what it trained on, with its source and split sizes")
    rec.add_argument("--wall-seconds", type=float, default=None)
    rec.add_argument("--workspace", default=".", help="the workspace the run was made in (params.yaml, git)")
    rec.add_argument("--mode", choices=results.MODES, default=None, help="default: train.json's config.model_mode")
    rec.add_argument("--num-classes", type=int, default=None)
    rec.add_argument("--git-commit", default=None)
    rec.add_argument("--date", default=None, help="ISO date the run finished (default today)")
    rec.add_argument("--notes", default=None)
    lat = commands.add_parser("record-latency",
                              help="publish a measurement of benchmarks/bench_latency.py as docs/latency/<name>/")
    lat.add_argument("--name", required=True, help="the folder name, e.g. 2026-11-26-trained")
    lat.add_argument("--what", required=True, help="what was measured: which models, trained how, on what machine state")
    lat.add_argument("--from", dest="source", type=Path, default=DEFAULT_BENCH_OUT,
                     help="the folder bench_latency.py wrote (default benchmarks/results)")
    lat.add_argument("--command", default=None, help="default: the command latency.json names")
    lat.add_argument("--git-commit", default=None)
    lat.add_argument("--date", default=None, help="ISO date of the measurement (default today)")
    gpu = commands.add_parser("record-gpu", help="publish a run of benchmarks/gpu_comparison.py as docs/gpu/<name>/")
    gpu.add_argument("--name", required=True, help="the folder name, e.g. 2026-11-27-h200-cifar10-30ep")
    gpu.add_argument("--from", dest="source", type=Path, required=True,
                     help="the folder holding the run's comparison.json (--output) and logs (--log-dir)")
    gpu.add_argument("--what", required=True, help="what was run, in a few words")
    gpu.add_argument("--command", required=True, help="the command that ran it")
    gpu.add_argument("--machine", required=True, help="the accelerator and host, as the run printed them")
    gpu.add_argument("--software", required=True, help="JAX, Keras, NumPy versions, as the run printed them")
    gpu.add_argument("--training-data", required=True, help="what it trained on, with its source and split sizes")
    gpu.add_argument("--recipe", required=True, help="the training settings: recipe, optimiser, seed, ...")
    gpu.add_argument("--git-commit", default=None)
    gpu.add_argument("--date", default=None, help="ISO date of the run (default today)")
    gpu.add_argument("--notes", default=None)
    args = parser.parse_args(argv)

    try:
        if args.command_name == "record":
            record(args)
            return 0
        if args.command_name == "record-latency":
            record_latency(args)
            return 0
        if args.command_name == "record-gpu":
            record_gpu(args)
            return 0
        if args.print:
            print(results.render_table(results.load_runs(args.results_dir)), end="")
            return 0
        current = results.update_readme(args.readme, args.results_dir, check=args.check,
                                        more_tables=[*latency_tables(args.latency_dir.resolve()),
                                                     gpu_table(args.gpu_dir.resolve()),
                                                     suite_table(args.suite_dir.resolve())])
    except (ValueError, FileExistsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check and not current:
        print(f"{args.readme}: the generated tables are out of date; run `python benchmarks/results_table.py` "
              "and commit the README", file=sys.stderr)
        return 1
    print(f"{args.readme}: generated tables {'up to date' if current else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
