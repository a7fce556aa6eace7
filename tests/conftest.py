import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/programs.py
# XLA's CPU compile dominates the JAX tests; its optimisations do not change results at these tolerances.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# GPU kernels run on CPU through their interpreters unless a GPU run asks otherwise (TRITON_INTERPRET=0 on a device):
# Triton reads this when a kernel is decorated, so it must be set before any kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
