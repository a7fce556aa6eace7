"""Terminal rendering of `describe` with rich (imported only when printing)."""
from __future__ import annotations

from .summary import human


def print_describe(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    sched = info["schedule"]
    con.print(f"[bold]{info['name']}[/bold]: {info['num_layers']} layers, dim {info['dim']}, mode {info['mode']}")
    con.print(f"schedule: {' '.join(sched)}")
    con.print(f"backbone {info['num_backbone']} ({info['backbone_pct']}%), attention {info['num_attention']}, "
              f"parallel {info['num_parallel']}, mlp {info['num_mlp']}")
    t = Table(show_lines=False)
    for col in ("#", "kind", "options", "params", f"state @{info['context']}", "FLOPs/token"):
        t.add_column(col, justify="right" if col not in ("kind", "options") else "left")
    for r in info["layers"]:
        params = human(r["params"]) + (" (shared)" if r["shared"] else "")
        t.add_row(str(r["index"]), r["kind"], r["options"], params, human(r["state_bytes"], "B"), human(r["flops_per_token"]))
    con.print(t)
    io = ", ".join(f"{k} {human(v)}" for k, v in info["params_io"].items() if v)
    con.print(f"parameters: [bold]{info['params']:,}[/bold] ({human(info['params'])})" + (f"; of which {io}" if io else ""))
    ratio = info["state_bytes_all_attention"] / max(info["state_bytes"], 1)
    con.print(f"inference state per sequence at context {info['context']} ({info['dtype']}): "
              f"[bold]{human(info['state_bytes'], 'B')}[/bold]; all-attention model of the same depth: "
              f"{human(info['state_bytes_all_attention'], 'B')} ({ratio:.1f}x)")
    con.print(f"forward FLOPs per token at context {info['context']}: {human(info['flops_per_token'])}")
