#!/usr/bin/env bash
# The GPU session's first check (session 7's recipe): the Triton and Pallas kernels natively, then benchmarks.gpu.
#
#   bash scripts/gpu_check.sh fetch    # here (CPU machine): hybridc's pure-Python dependencies as cp312 wheels into
#                                      #   .whl/ (ignored through .git/info/exclude); the GPU image has torch, triton,
#                                      #   jax and pytest but not pydantic/lark
#   bash scripts/gpu_check.sh run      # there (the device tool's `run`, carry [".whl"]): tests, then the benchmark;
#                                      #   about 270 s on an H200 plus the machine's start
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      pydantic pydantic-core lark annotated-types typing-inspection
    ls .whl ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/backends:$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
    export XLA_PYTHON_CLIENT_PREALLOCATE=false   # 8 pytest workers each preallocating 75% of the GPU run out of memory
    out=${OUT:-/tmp}
    timeout 200 python3 -m pytest tests/ops -q -p no:cacheprovider -n 8 --continue-on-collection-errors \
      -k "triton or pallas or cuda or gpu" -rfE 2>&1 | tee "$out/ops.log" | grep -v "^\.\|^$" | tail -45 || true
    timeout 220 python3 -m benchmarks.gpu --reps 5 2>&1 | tee "$out/gpu.log" ;;
  *) echo "usage: bash scripts/gpu_check.sh fetch|run" >&2; exit 2 ;;
esac
