"""Where a tensor's channels come from: layouts of segments over channel groups, and the groups' union-find.

A *channel group* is a set of channels that must be removed together: channel j of every tensor tied to the group.
A tensor's *layout* lists, in order along its channel axis, which range of which group each stretch of channels is
(one segment for most tensors; several after a Concat; a sub-range after a Split). Ties found later (a residual Add
of two tensors) merge groups, so segments name a group by the id it had when they were made and are resolved
through `GroupTable.find`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    group: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


Layout = tuple[Segment, ...]


def layout_size(layout: Layout) -> int:
    return sum(segment.size for segment in layout)


def sub_layout(layout: Layout, start: int, stop: int) -> Layout:
    """The segments covering positions [start, stop) of `layout` (a Split output)."""
    pieces, offset = [], 0
    for segment in layout:
        low, high = max(start, offset), min(stop, offset + segment.size)
        if low < high:
            shift = segment.start - offset
            pieces.append(Segment(segment.group, low + shift, high + shift))
        offset += segment.size
    return tuple(pieces)


class GroupTable:
    """Union-find over channel groups, with each group's size and, for groups that must stay whole, why."""

    def __init__(self):
        self._parent: list[int] = []
        self.sizes: list[int] = []
        self.blocked: dict[int, str] = {}

    def new(self, size: int, blocked: str | None = None) -> int:
        self._parent.append(len(self._parent))
        self.sizes.append(size)
        group = len(self._parent) - 1
        if blocked:
            self.blocked[group] = blocked
        return group

    def find(self, group: int) -> int:
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.sizes[a] != self.sizes[b]:
            raise ValueError(f"tying groups of {self.sizes[a]} and {self.sizes[b]} channels")
        keep, gone = min(a, b), max(a, b)
        self._parent[gone] = keep
        reason = self.blocked.pop(gone, None)
        if reason and keep not in self.blocked:
            self.blocked[keep] = reason
        return keep

    def block(self, layout: Layout, reason: str) -> None:
        """Mark every group in `layout` as one that must stay whole (the first reason found is kept)."""
        for segment in layout:
            self.blocked.setdefault(self.find(segment.group), reason)

    def reason(self, group: int) -> str | None:
        return self.blocked.get(self.find(group))

    def tie(self, a: Layout, b: Layout, where: str) -> None:
        """Channel i of `a` and channel i of `b` must go together (an elementwise op reads both).

        Whole groups in matching segments are merged; anything else (a concatenation added to a single tensor)
        blocks every group involved rather than guessing an index mapping.
        """
        whole = len(a) == len(b) and all(
            x.size == y.size and x.start == 0 and y.start == 0 and x.size == self.sizes[self.find(x.group)]
            and y.size == self.sizes[self.find(y.group)] for x, y in zip(a, b))
        if not whole:
            if not (a == b):
                self.block(a + b, f"channels tied unevenly at {where}")
            return
        for x, y in zip(a, b):
            self.union(x.group, y.group)


def kept_positions(layout: Layout, kept: dict[int, np.ndarray], table: GroupTable) -> np.ndarray:
    """Positions along a tensor's channel axis that survive when each group g keeps the channels `kept[g]`
    (groups not in `kept` keep all)."""
    positions, offset = [], 0
    for segment in layout:
        group = table.find(segment.group)
        indices = kept.get(group)
        if indices is None:
            positions.append(np.arange(offset, offset + segment.size))
        else:
            inside = indices[(indices >= segment.start) & (indices < segment.stop)]
            positions.append(offset + inside - segment.start)
        offset += segment.size
    return np.concatenate(positions).astype(np.int64) if positions else np.zeros(0, np.int64)
