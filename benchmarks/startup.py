"""How fast `hybridc describe` starts, and proof that it imports neither torch nor jax.

    python -m benchmarks.startup [--runs 15]

Runs the installed `hybridc` script (a fresh interpreter each time) and prints min / median wall time, next to a bare
`python -c pass` and a bare `python -c "import pydantic, lark, rich"` (its three dependencies), interleaved in the
same run, and the ratio describe / bare imports (the target is at most 1.5), and the zoo's 52-layer Nemotron-H-8B
against the 10-layer example (the target: no slower); then lists the slowest imports of one
run (`-X importtime`). A fourth row, "the same three, used", is the floor any describe built on them pays: one
Pydantic model class validated, the grammar's Lark parser loaded from its cache, one rich table printed.
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
ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo" / "nemotron_h_8b.hyb"  # 52 layers: no slower
USED = """
import pydantic, lark, rich
from pydantic import BaseModel, Field
from hybridc.parse import _parser
_parser().parse("layers mamba attn\\n")
class A(BaseModel):
    x: int = Field(1, ge=1)
A(x=2)
from rich.console import Console
from rich.table import Table
t = Table(); t.add_column("a"); t.add_row("1"); Console().print(t)
"""


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
    cmds = {"python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import pydantic, lark, rich'": [sys.executable, "-c", "import pydantic, lark, rich"],
            "the same three, used (the floor)": [sys.executable, "-c", USED],
            "hybridc describe examples/nemotron_h.hyb": [exe, "describe", str(EXAMPLE)],
            "hybridc describe examples/zoo/nemotron_h_8b.hyb": [exe, "describe", str(ZOO)]}
    times = {k: [] for k in cmds}
    for _ in range(a.runs):  # interleaved, so that load on the machine hits every command alike
        for k, cmd in cmds.items():
            times[k] += wall(cmd, 1)
    print(f"{'command':42s} {'min ms':>8s} {'median ms':>10s}")
    for k, t in times.items():
        print(f"{k:42s} {1e3 * min(t):8.1f} {1e3 * statistics.median(t):10.1f}")
    deps, desc = times["python -c 'import pydantic, lark, rich'"], times["hybridc describe examples/nemotron_h.hyb"]
    used = times["the same three, used (the floor)"]
    print(f"describe / bare imports: {min(desc) / min(deps):.2f}x (min), "
          f"{statistics.median(desc) / statistics.median(deps):.2f}x (median); target <= 1.5x")
    zoo = times["hybridc describe examples/zoo/nemotron_h_8b.hyb"]
    print(f"zoo nemotron_h_8b (52 layers) / nemotron_h (10 layers): {min(zoo) / min(desc):.2f}x (min), "
          f"{statistics.median(zoo) / statistics.median(desc):.2f}x (median); target <= 1.0x")
    print(f"floor / bare imports: {min(used) / min(deps):.2f}x; describe / floor: {min(desc) / min(used):.2f}x (min)")
    rows = importtime()
    heavy = [n.strip() for _, n in rows if n.strip().split(".")[0] in ("torch", "jax", "jaxlib")]
    print(f"torch/jax modules imported: {len(heavy)}")
    top = [r for r in rows if len(r[1]) - len(r[1].lstrip()) <= 2]
    print("slowest top-level imports (cumulative ms): " + ", ".join(f"{n.strip()} {c / 1e3:.0f}" for c, n in sorted(top)[-6:][::-1]))


if __name__ == "__main__":
    main()
