#!/usr/bin/env bash
# The CIFAR-10 comparison on a GPU machine that has JAX (CUDA), NumPy and Pillow but no
# TensorFlow, no Keras and no network (see benchmarks/gpu_comparison.py).
#
#   bash benchmarks/gpu_comparison.sh prepare       # here: wheels + archive into .gpu/ (git-ignored)
#   bash benchmarks/gpu_comparison.sh run [ARGS]    # there, from the project root, with .gpu/ beside it
#
# prepare downloads, for CPython 3.12 on manylinux x86-64, the wheels the GPU machine lacks:
# keras and its namex and optree, pydantic with pydantic-core, annotated-types and
# typing-inspection (pinned to the versions installed here), and copies the CIFAR-10 JPEG
# archive; together about 25 MiB. run installs them into /tmp/site and trains all four models.
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu
ARCHIVE=${LIGHTCNN_CIFAR10_JPEG:-../shared/data/cifar10-jpeg.tar.gz}
PACKAGES=(keras namex optree pydantic pydantic-core annotated-types typing-inspection)

case "${1:-}" in
  prepare)
    grep -qxF "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >> .git/info/exclude
    rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR/wheels" "$GPU_DIR/data"
    pins=()
    for package in "${PACKAGES[@]}"; do
      version=$(python -m pip show "$package" 2>/dev/null | awk '/^Version:/ {print $2}')
      [ -n "$version" ] || { echo "error: $package is not installed here (pip install -e . first)" >&2; exit 1; }
      pins+=("$package==$version")
    done
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$GPU_DIR/wheels" "${pins[@]}"
    cp "$ARCHIVE" "$GPU_DIR/data/cifar10-jpeg.tar.gz"
    du -sh "$GPU_DIR"; ls "$GPU_DIR/wheels"
    ;;
  run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$GPU_DIR"/wheels/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    python3 benchmarks/gpu_comparison.py --archive "$GPU_DIR/data/cifar10-jpeg.tar.gz" "$@"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_comparison.sh prepare | run [gpu_comparison.py arguments]" >&2
    exit 2
    ;;
esac
