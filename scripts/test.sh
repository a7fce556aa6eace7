#!/usr/bin/env bash
# Install hybridc with every backend and test dependency into .venv, then run the test suite.
# Also checks that a plain (non-editable) `pip install .` gives a working `hybridc describe` without torch or jax,
# and runs tests/core in that install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0          # the CPU build; pinned so no CUDA build is fetched
.venv/bin/python -m pip install -q -e ".[torch,jax,dev]"

# core only, non-editable, in a fresh venv: describe must work with neither torch nor jax
core=$(mktemp -d)
"$PY" -m venv "$core/venv"
"$core/venv/bin/python" -m pip install -q .
(cd "$core" && venv/bin/hybridc describe "$OLDPWD/examples/nemotron_h.hyb" >/dev/null)
(cd "$core" && venv/bin/python -c "import sys, hybridc; hybridc.describe(hybridc.load('preset hymba')); assert 'torch' not in sys.modules and 'jax' not in sys.modules")
# compile needs a backend: without torch it must fail clearly (exit 2), naming the extra to install
set +e; (cd "$core" && venv/bin/hybridc compile "$OLDPWD/examples/nemotron_h.hyb" --backend torch 2>"$core/err"); rc=$?; set -e
[ "$rc" = 2 ] && grep -q "hybridc\[torch\]" "$core/err" || { echo "compile without torch: rc=$rc"; cat "$core/err"; exit 1; }
# the core's tests run in that install too: they need neither torch nor jax
"$core/venv/bin/python" -m pip install -q pytest hypothesis jsonschema
"$core/venv/bin/pytest" -q -p no:cacheprovider tests/core
rm -rf "$core"
echo "core-only install: hybridc describe and tests/core ok without torch/jax"

.venv/bin/python -m pytest -p no:cacheprovider "$@"
