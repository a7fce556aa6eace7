"""How fast `hybridc describe` starts, and proof that it imports neither torch nor jax.

    python -m benchmarks.startup [--runs 15]

Runs the installed `hybridc` script (a fresh interpreter each time) and prints min / median wall time, next to a bare
`python -c pass` measured in the same run; then lists the slowest imports of one run (`-X importtime`).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "nemotron_h.hyb"


def wall(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def importtime() -> list[tuple[int, str]]:
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "hybridc.cli", "describe", str(EXAMPLE)],
                       capture_output=True, text=True, check=True)
    rows = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "self" not in line:
            _, cum, name = line[12:].split("|")
            rows.append((int(cum), name.rstrip()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    exe = shutil.which("hybridc") or str(Path(sys.executable).parent / "hybridc")
    base = wall([sys.executable, "-c", "pass"], a.runs)
    desc = wall([exe, "describe", str(EXAMPLE)], a.runs)
    print(f"{'command':40s} {'min ms':>8s} {'median ms':>10s}")
    print(f"{'python -c pass':40s} {1e3 * min(base):8.1f} {1e3 * statistics.median(base):10.1f}")
    print(f"{'hybridc describe examples/nemotron_h.hyb':40s} {1e3 * min(desc):8.1f} {1e3 * statistics.median(desc):10.1f}")
    rows = importtime()
    heavy = [n.strip() for _, n in rows if n.strip().split(".")[0] in ("torch", "jax", "jaxlib")]
    print(f"torch/jax modules imported: {len(heavy)}")
    top = [r for r in rows if len(r[1]) - len(r[1].lstrip()) <= 2]
    print("slowest top-level imports (cumulative ms): " + ", ".join(f"{n.strip()} {c / 1e3:.0f}" for c, n in sorted(top)[-6:][::-1]))


if __name__ == "__main__":
    main()
