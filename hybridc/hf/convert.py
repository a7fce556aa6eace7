"""Tensor conversions between a transformers checkpoint and hybridc's names, written once for every framework.

A family module lists, for one config, every conversion as a `Map`: the transformers names it reads, the hybridc
names it writes, and two functions (transformers -> ours, ours -> transformers) written only with the operations of
an array adapter `xp` (`XP` below). The same list then serves:

- the checks before anything is read: run on `ShapeXP` (shapes only, no data) from the checkpoint's headers, it
  gives every tensor's converted shape, compared with the model's (`plan`);
- loading into torch or JAX (their adapters in `backends/hybridc_{torch,jax}/hf.py`), one tensor at a time;
- exporting (the inverse functions), with numpy (`NumpyXP`) for a weights file or the framework's own arrays.

Most maps are renames (`rename`); the others split a fused projection (`split`), re-index interleaved rows
(`take`) or change a layout (`transform` with the adapter's permute/reshape).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import HybridcError

Fn = Callable[["XP", list], list]


@dataclass(frozen=True)
class Map:
    """transformers tensors `hf` <-> hybridc tensors `ours`; `to_ours(xp, [hf tensors]) -> [our tensors]` and
    `to_hf(xp, [our tensors]) -> [hf tensors]` (in the order of the names)."""

    hf: tuple[str, ...]
    ours: tuple[str, ...]
    to_ours: Fn = field(default=lambda xp, ts: list(ts), repr=False)
    to_hf: Fn = field(default=lambda xp, ts: list(ts), repr=False)


def rename(hf: str, ours: str) -> Map:
    return Map((hf,), (ours,))


def transform(hf: str, ours: str, to_ours: Callable, to_hf: Callable) -> Map:
    """One tensor through `to_ours(xp, t)` / `to_hf(xp, t)`."""
    return Map((hf,), (ours,), lambda xp, ts: [to_ours(xp, ts[0])], lambda xp, ts: [to_hf(xp, ts[0])])


def split(hf: str, ours: Sequence[str], sizes: Sequence[int], axis: int = 0) -> Map:
    """A fused tensor cut along `axis` into consecutive pieces of `sizes` (and concatenated back)."""
    sizes = tuple(sizes)
    return Map((hf,), tuple(ours), lambda xp, ts: xp.split(ts[0], sizes, axis), lambda xp, ts: [xp.cat(ts, axis)])


def take(hf: str, ours: str, index: Sequence[int], axis: int = 0) -> Map:
    """Rows re-indexed: ours = hf[index] along `axis` (`index` a permutation; the inverse permutation back)."""
    index = tuple(index)
    inv = [0] * len(index)
    for i, j in enumerate(index):
        inv[j] = i
    return transform(hf, ours, lambda xp, t: xp.take(t, index, axis), lambda xp, t: xp.take(t, tuple(inv), axis))


class XP:
    """The array operations a conversion may use; each framework implements them (`ShapeXP` on shapes alone)."""

    def shape(self, t) -> tuple[int, ...]: ...
    def split(self, t, sizes: tuple[int, ...], axis: int) -> list: ...
    def cat(self, ts: Sequence, axis: int): ...
    def permute(self, t, axes: tuple[int, ...]): ...
    def reshape(self, t, shape: tuple[int, ...]): ...
    def take(self, t, index: tuple[int, ...], axis: int): ...
    def add(self, t, c: float): ...
    def mul(self, t, c: float): ...


class Shape(tuple):
    """A tensor known by its shape only (`ShapeXP`)."""


class ShapeXP(XP):
    """Shapes through a conversion: the checks before any data is read. Raises ValueError where a framework would."""

    def shape(self, t):
        return tuple(t)

    def split(self, t, sizes, axis):
        if sum(sizes) != t[axis]:
            raise ValueError(f"cannot split {tuple(t)} into {sizes} along axis {axis}")
        return [Shape(t[:axis] + (s,) + t[axis + 1:]) for s in sizes]

    def cat(self, ts, axis):
        rest = {tuple(t[:axis]) + tuple(t[axis + 1:]) for t in ts}
        if len(rest) != 1:
            raise ValueError(f"cannot concatenate {[tuple(t) for t in ts]} along axis {axis}")
        t0 = ts[0]
        return Shape(t0[:axis] + (sum(t[axis] for t in ts),) + t0[axis + 1:])

    def permute(self, t, axes):
        if sorted(axes) != list(range(len(t))):
            raise ValueError(f"cannot permute {tuple(t)} by {axes}")
        return Shape(t[a] for a in axes)

    def reshape(self, t, shape):
        n = 1
        for s in t:
            n *= s
        m = 1
        for s in shape:
            m *= s
        if n != m:
            raise ValueError(f"cannot reshape {tuple(t)} to {tuple(shape)}")
        return Shape(shape)

    def take(self, t, index, axis):
        if len(index) != t[axis] or sorted(index) != list(range(t[axis])):
            raise ValueError(f"cannot re-index axis {axis} of {tuple(t)} with {len(index)} indices")
        return Shape(t)

    def add(self, t, c):
        return t

    def mul(self, t, c):
        return t


class NumpyXP(XP):
    """numpy arrays (export from a weights file; the CLI's conversions need no framework)."""

    def __init__(self):
        import numpy

        self.np = numpy

    def shape(self, t):
        return tuple(t.shape)

    def split(self, t, sizes, axis):
        cuts = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
        return self.np.split(t, cuts, axis=axis)

    def cat(self, ts, axis):
        return self.np.concatenate(list(ts), axis=axis)

    def permute(self, t, axes):
        return self.np.transpose(t, axes)

    def reshape(self, t, shape):
        return self.np.reshape(t, shape)

    def take(self, t, index, axis):
        return self.np.take(t, self.np.asarray(index), axis=axis)

    def add(self, t, c):
        return t + self.np.asarray(c, dtype=t.dtype)

    def mul(self, t, c):
        return t * self.np.asarray(c, dtype=t.dtype)


def check_maps(maps: Sequence[Map], *, source_name: str) -> None:
    """No name read or written twice (a family module's own consistency; an error here is a hybridc bug)."""
    seen_hf, seen_ours = set(), set()
    for m in maps:
        for n in m.hf:
            if n in seen_hf:
                raise HybridcError(f"conversion reads {n} twice", source_name=source_name)
            seen_hf.add(n)
        for n in m.ours:
            if n in seen_ours:
                raise HybridcError(f"conversion writes {n} twice", source_name=source_name)
            seen_ours.add(n)


def plan_shapes(maps: Sequence[Map], hf_shapes: dict, our_shapes: dict, *, source_name: str,
                where: dict | None = None) -> None:
    """Every conversion on shapes alone: names and shapes against the checkpoint's (`hf_shapes`) and the model's
    (`our_shapes`); one HybridcError listing every problem (nothing has been read or loaded yet)."""
    check_maps(maps, source_name=source_name)
    where = where or {}
    problems = []
    wanted = {n for m in maps for n in m.hf}
    for n in sorted(wanted - set(hf_shapes)):
        problems.append(f"missing tensor {n}")
    for n in sorted(set(hf_shapes) - wanted):
        problems.append(f"unexpected tensor {n} (in {where.get(n, source_name)})")
    produced = {n for m in maps for n in m.ours}
    lacking = sorted(set(our_shapes) - produced)
    if lacking:
        problems.append("hybridc tensors no checkpoint tensor fills (a hybridc bug): " + ", ".join(lacking[:8]))
    extra = sorted(produced - set(our_shapes))
    if extra:
        problems.append("converted tensors the model lacks (a hybridc bug): " + ", ".join(extra[:8]))
    if not problems:
        xp = ShapeXP()
        for m in maps:
            try:
                got = m.to_ours(xp, [Shape(hf_shapes[n]) for n in m.hf])
            except ValueError as e:
                problems.append(f"tensor {', '.join(m.hf)} (in {where.get(m.hf[0], source_name)}): shape "
                                f"{', '.join(str(tuple(hf_shapes[n])) for n in m.hf)} does not fit the config: {e}")
                continue
            for n, s in zip(m.ours, got):
                if tuple(s) != tuple(our_shapes[n]):
                    problems.append(f"tensor {', '.join(m.hf)} (in {where.get(m.hf[0], source_name)}): shape "
                                    f"{', '.join(str(tuple(hf_shapes[k])) for k in m.hf)}, the config needs "
                                    f"{tuple(our_shapes[n])} for {n}")
    if problems:
        head = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise HybridcError("checkpoint does not match its config:\n  " + "\n  ".join(head), source_name=source_name)
