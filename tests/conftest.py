import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/programs.py
# XLA's CPU compile dominates the JAX tests; its optimisations do not change results at these tolerances.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
