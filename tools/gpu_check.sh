#!/usr/bin/env bash
# The first GPU run of the CUDA engine in one command: environment, a build from this checkout,
# a smoke step, pytest -m cuda, the checks script, the benchmark and compute-sanitizer, each
# stage under its own timeout, everything in one output folder. See tools/gpu_check.py --help.
#   tools/gpu_check.sh [--out DIR] [--stages env,build,...] [--archs 90-real] [--jobs N]
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" tools/gpu_check.py "$@"
