#!/usr/bin/env bash
# The engine's tests under AddressSanitizer: builds fastopt._C and fastopt._C_simt with
# -fsanitize=address into BUILD_DIR, stages the package next to them in BUILD_DIR/run, and runs
# the engine, state, safety, pipeline, precision, host-refresh and emulated-CUDA tests there
# (~20 min on 2 cores: the build is most of it). Any ASan report fails the run and is printed.
#
#   bash tools/asan_check.sh [BUILD_DIR]        # default: build/asan
#
# libasan and libstdc++ are preloaded into python (ASan must intercept __cxa_throw before the
# extension loads); leak detection is off (CPython and torch keep their allocations at exit).
# The emulation's fibers tell ASan about their stack switches (csrc/simt/simt.cpp), so reports
# from the emulated CUDA kernels are as real as those from the CPU engine.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/asan}
python=$(command -v python)

cmake -S . -B "$build" -G Ninja -DFASTOPT_CUDA=off -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address" \
  -DCMAKE_PREFIX_PATH="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)');$("$python" -m pybind11 --cmakedir)" \
  -DPython_EXECUTABLE="$python" > /dev/null
ninja -C "$build"

run="$build/run"
rm -rf "$run" && mkdir -p "$run"
cp -r fastopt tests configs pyproject.toml "$run"/
rm -f "$run"/fastopt/*.so && cp "$build"/*.so "$run"/fastopt/

logs="$build/asan-logs"
rm -rf "$logs" && mkdir -p "$logs"
status=0
(
  cd "$run"
  LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$PWD/../asan-logs/asan" \
    PYTHONPATH=. "$python" -m pytest -q -x -p no:cacheprovider -m "not slow" \
    tests/test_shard_phases.py tests/test_fused_safety.py tests/test_fused_state.py \
    tests/test_engine.py tests/test_fused_errors.py tests/test_fused_pipeline.py \
    tests/test_simt.py tests/test_fused_ema.py tests/test_nonfinite.py tests/test_precision.py \
    tests/test_fused_optim.py tests/test_cuda_engine_emulated.py tests/test_catalog.py \
    tests/test_quant8.py tests/test_quant8_optim.py tests/test_host_refresh.py
) || status=$?
if compgen -G "$logs/asan*" > /dev/null; then
  cat "$logs"/asan*
  exit 1
fi
exit "$status"
