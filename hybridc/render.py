"""Terminal rendering of `describe` with rich (imported only when printing)."""
from __future__ import annotations

from .summary import human


def print_describe(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    if not con.is_terminal:  # piped or captured: no terminal to fit, so rows are not wrapped to 80 columns
        con = Console(width=120)
    sched = info["schedule"]
    con.print(f"[bold]{info['name']}[/bold]: {info['num_layers']} layers, dim {info['dim']}, mode {info['mode']}")
    con.print(f"schedule: {' '.join(sched)}")
    con.print(f"backbone {info['num_backbone']} ({info['backbone_pct']}%), attention {info['num_attention']}, "
              f"parallel {info['num_parallel']}, mlp {info['num_mlp']}")
    t = Table(show_lines=False)
    moe = info.get("router_params", 0) > 0  # a mixture of experts: active parameters per layer too
    for col in ("#", "n", "kind", "options", "params", *(("active",) if moe else ()), f"state @{info['context']}",
                "FLOPs/token"):
        t.add_column(col, justify="right" if col not in ("kind", "options") else "left", no_wrap=col in ("#", "n"))
    for idx, r in _grouped(info["layers"]):
        params = human(r["params"]) + (" (shared)" if r["shared"] else "")
        active = (human(r["active_params"]),) if moe else ()
        t.add_row(_short_spans(idx), str(len(idx)), r["kind"], r["options"], params, *active, human(r["state_bytes"], "B"), human(r["flops_per_token"]))
    con.print(t)
    if info.get("scales"):
        con.print("scales: " + ", ".join(f"{k} {v:g}" for k, v in info["scales"].items()))
    norm = {k: v for k, v in info.get("norm", {}).items() if k != "kind"}
    if norm:  # the `norm` statement's options that differ from their defaults
        con.print(f"norm: {info['norm']['kind']} " + ", ".join(k if v is True else f"{k} {v}" for k, v in norm.items()))
    io = ", ".join(f"{k} {human(v)}" for k, v in info["params_io"].items() if v)
    con.print(f"parameters: [bold]{info['params']:,}[/bold] ({human(info['params'])})" + (f"; of which {io}" if io else ""))
    if moe:  # total vs what one token uses (router + top_k experts + shared experts)
        con.print(f"active parameters per token: [bold]{info['active_params']:,}[/bold] ({human(info['active_params'])}); "
                  f"routers {human(info['router_params'])}; FLOPs count the active experts")
    ratio = info["state_bytes_all_attention"] / max(info["state_bytes"], 1)
    con.print(f"inference state per sequence at context {info['context']} ({info['dtype']}): "
              f"[bold]{human(info['state_bytes'], 'B')}[/bold]; all-attention model of the same depth: "
              f"{human(info['state_bytes_all_attention'], 'B')} ({ratio:.1f}x)")
    con.print(f"forward FLOPs per token at context {info['context']}: {human(info['flops_per_token'])}")
    if "kernels" in info:
        print_kernels(con, info["kernels"])


def _grouped(layers: list[dict]) -> list[tuple[list[int], dict]]:
    """Layers whose row would read the same, as one row: (their indices, the row), in order of first appearance
    (Nemotron-H-8B's 52 layers are 3 rows; `--json` keeps one entry per layer)."""
    groups: dict = {}
    for r in layers:
        key = tuple(v for k, v in r.items() if k != "index")
        groups.setdefault(key, ([], r))[0].append(r["index"])
    return list(groups.values())


def _short_spans(idx: list[int], width: int = 16) -> str:
    """_spans, or its first two and last entries when longer than `width` ("1, 3, …, 51")."""
    text = _spans(idx)
    return text if len(text) <= width else f"{idx[0]}, {idx[1]}, …, {idx[-1]}"


def _spans(idx: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out, start = [], None
    for i, v in enumerate(idx):
        start = v if start is None else start
        if i + 1 == len(idx) or idx[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def print_kernels(con, plans: dict) -> None:
    """One table: mixer kind, its layers, the recurrence, then the kernel per backend and device."""
    from rich.table import Table

    cols = [(b, d) for b, rows in plans.items() for d in (rows[0]["impl"] if rows else {})]
    first = next(iter(plans.values()))
    head = ["kind", "layers", "recurrence", *(f"{b} {d}" for b, d in cols)]
    rows = [[row["kind"], _spans(row["layers"]), row["op"], *(plans[b][i]["impl"][d] for b, d in cols)]
            for i, row in enumerate(first)]
    t = Table(title="kernels (impl=\"auto\"; HYBRIDC_KERNEL or impl= override)", title_justify="left")
    for j, col in enumerate(head):                                     # names are never truncated
        t.add_column(col, no_wrap=True, min_width=max(len(str(r[j])) for r in [head, *rows]))
    for r in rows:
        t.add_row(*r)
    from rich.console import Console

    Console(width=max(con.width, 160)).print(t)                        # wider than the terminal rather than cropped
