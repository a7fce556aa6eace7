"""`python -m benchmarks.models --quick` runs end to end for one family (Mamba, torch and transformers): the logits
check passes and greedy tokens equal transformers'."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]


def test_models_benchmark_quick_runs():
    p = subprocess.run([sys.executable, "-m", "benchmarks.models", "--quick", "--only", "mamba", "--no-jax"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("| mamba |")]
    assert rows[0].startswith("| mamba | MambaForCausalLM |") and rows[0].endswith("| yes |"), p.stdout
    assert rows[-1].endswith("| yes |"), p.stdout  # decoding: tokens equal transformers'
