"""The project's shape: no import cycles anywhere, and a compiler core that is only the compiler.

Both tests read the sources with `ast` (nothing is imported), so they run in the core-only install too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"hybridc": ROOT / "hybridc", "hybridc_native": ROOT / "backends" / "hybridc_native",
            "hybridc_torch": ROOT / "backends" / "hybridc_torch", "hybridc_jax": ROOT / "backends" / "hybridc_jax"}
DEVICE_WORDS = ("torch", "jax", "triton", "pallas", "xla", "cuda")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [pkg, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Project modules `name` imports anywhere in its body (function-level imports count: they are cycles too)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import a.b.c` of a non-module attribute: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(modules) > 40
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _core_files():
    return sorted((ROOT / "hybridc").rglob("*.py"))


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_is_only_the_compiler(path):
    """hybridc/ imports no framework, no backend, no native runtime, and names no device backend."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        for n in names:
            top = n.split(".")[0]
            assert top not in ("torch", "jax", "jaxlib", "triton", "hybridc_native", "hybridc_torch",
                               "hybridc_jax"), f"{path.name} imports {n}"
    words = path.read_text().lower()
    for word in ("triton", "pallas", "xla", "cuda"):
        assert word not in words, f"{path.relative_to(ROOT)} names the device backend {word!r}"


def test_describe_imports_only_the_kinds_a_model_uses():
    """Startup stays flat as kinds are added: a kind's module (and its validator) is built only when a model uses it."""
    import subprocess
    import sys

    code = ("import sys, hybridc; hybridc.describe(hybridc.load_file('examples/nemotron_h.hyb')); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('hybridc.kinds.') and "
            "not m.rpartition('.')[2].startswith('_'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["hybridc.kinds.attn", "hybridc.kinds.mamba"]
