"""The torch backend's layout conventions: one folder per op in ``hybridc_torch.ops`` (the six entry callables,
`OPS`), one module per layer kind in ``hybridc_torch.layers`` declaring ``LAYER`` and ``OP`` or ``KERNEL``, and no
import cycle among the backend's modules (a fast kernel never imports its own entry point).
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hybridc.kinds import NAMES as KINDS  # noqa: E402  every registered IR kind
from hybridc_native.choice import Op  # noqa: E402

import hybridc_torch  # noqa: E402
from hybridc_torch import ops  # noqa: E402

OP_NAMES = ("selective_scan", "ssd", "delta_rule", "gated_delta_rule", "rwkv7", "linear_recurrence", "causal_conv1d",
            "rms_norm_gated")
ROOT = Path(hybridc_torch.__file__).resolve().parent


def test_ops_expose_the_six_entry_callables_and_their_ops():
    from hybridc_torch.ops import delta_rule, gated_delta_rule, linear_recurrence, rwkv7, selective_scan, ssd

    entries = dict(zip(OP_NAMES, (selective_scan, ssd, delta_rule, gated_delta_rule, rwkv7, linear_recurrence)))
    entries.update(causal_conv1d=ops.causal_conv1d, rms_norm_gated=ops.rms_norm_gated)
    assert all(callable(f) and f.__name__ == name for name, f in entries.items())
    assert set(ops.OPS) == set(OP_NAMES)
    for name, op in ops.OPS.items():
        assert isinstance(op, Op) and op.name == name and op.package == f"hybridc_torch.ops.{name}"
        assert op.impls["reference"] == "naive:reference"
        assert op.get("reference") is importlib.import_module(f"hybridc_torch.ops.{name}.naive").reference
        for impl, target in op.impls.items():   # each implementation in its own module of the op's folder
            assert (ROOT / "ops" / name / f"{target.partition(':')[0]}.py").is_file(), (name, impl)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_layer_module_declaring_what_it_runs(kind):
    mod = importlib.import_module(f"hybridc_torch.layers.{kind}")
    assert isinstance(mod.LAYER, type) and issubclass(mod.LAYER, torch.nn.Module)
    assert hasattr(mod, "OP") != hasattr(mod, "KERNEL"), "declare exactly one of OP and KERNEL"
    if hasattr(mod, "OP"):
        assert mod.OP in ops.OPS
    else:
        name, why = mod.KERNEL
        assert (name is None or isinstance(name, str)) and isinstance(why, str) and why


def _module_name(path: Path) -> str:
    parts = ("hybridc_torch", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set) -> set:
    """The backend modules that module `name` (file `path`) imports, at its top level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            subs = {f"{base}.{a.name}" for a in node.names} & modules
            out |= subs
            if len(subs) < len(node.names) or not name.startswith(base + "."):
                out.add(base)   # names from the module itself (from an ancestor package: its __init__'s names)
    return {m for m in out if m in modules and m != name}


def test_no_import_cycle_among_backend_modules():
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {name: _imports(path, name, set(files)) for name, path in files.items()}
    for op in ops.OPS.values():   # an Op imports its implementations by name, on first use
        graph[op.package] |= {f"{op.package}.{target.partition(':')[0]}" for target in op.impls.values()}
    state: dict = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
