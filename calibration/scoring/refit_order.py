"""Channel order by what the least-squares refit cannot restore: the channels given up first are those whose
contribution the kept channels predict best.

Pruned channels are recovered by re-solving their consumers from the channels kept (calibration/scoring/refit.py). A
criterion that ranks channels one at a time (L1 norm, Taylor) does not know that: it may keep two channels that
say the same thing and give up one that nothing else can stand in for. This order is the refit's own error,
minimised greedily: starting from every channel, the channels whose removal raises the consumers' error after the
refit least are removed first, a few at a time, and the error is updated in closed form (the Optimal Brain Surgeon
step on Σ's inverse; ThiNet and He et al.'s channel pruning choose channels by the same reconstruction, by greedy
search and LASSO). Each consumer's error counts relative to its output energy, so no consumer outweighs another
by scale alone. Groups without a consumer the refit can re-solve keep the order they were given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphopt.channels import ChannelAnalysis
from graphopt.calibration.scoring.refit import RIDGE, Consumer

STEPS = 64  # removal steps per group: a group gives up size / STEPS channels per step (at least one)


@dataclass
class _Reader:
    """One consumer's share of a group's elimination: entries[channel] are its patch entries for that channel."""

    entries: np.ndarray  # (group size, entries per channel), indices into the consumer's patch entries
    inverse: np.ndarray  # (Σ + λI)⁻¹ over the live entries
    solved: np.ndarray  # inverse @ Σ @ Wᵀ: the refit's weights, transposed, over the live entries
    live: np.ndarray  # the consumer's patch entries still kept, in the order of `inverse`'s rows
    energy: float  # tr(W Σ Wᵀ): the consumer's output energy

    def costs(self, channels: np.ndarray) -> np.ndarray:
        """Rise in the refit's error, relative to the output energy, if each channel alone were removed."""
        rows = self._rows(channels)  # (channels, taps)
        block = self.inverse[rows[:, :, None], rows[:, None, :]]
        z = self.solved[rows]  # (channels, taps, outputs)
        return np.einsum("cto,cto->c", z, np.linalg.solve(block, z)) / self.energy

    def remove(self, channels: np.ndarray) -> None:
        """Drop the channels' entries: the inverse and the refit downdated in closed form."""
        gone = self._rows(channels).reshape(-1)
        stay = np.setdiff1d(np.arange(len(self.live)), gone)
        cross = self.inverse[np.ix_(stay, gone)]
        step = np.linalg.solve(self.inverse[np.ix_(gone, gone)], np.concatenate(
            [cross.T, self.solved[gone]], axis=1))
        self.inverse = self.inverse[np.ix_(stay, stay)] - cross @ step[:, :len(stay)]
        self.solved = self.solved[stay] - cross @ step[:, len(stay):]
        self.live = self.live[stay]

    def _rows(self, channels: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.live, self.entries[channels])


def refit_order(analysis: ChannelAnalysis, consumers: dict[str, Consumer],
                fallback: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each prunable group, its channels from most to least important by the consumers' refit error; groups
    no consumer of the refit reads keep their `fallback` order."""
    orders = dict(fallback)
    for group in analysis.prunable:
        readers = [r for r in (_reader(analysis, group.root, group.size, edit, consumers[edit.node])
                               for edit in analysis.edits if edit.kind == "in" and edit.node in consumers)
                   if r is not None]
        if readers:
            orders[group.id] = _eliminate(group.size, readers)
    return orders


def _reader(analysis: ChannelAnalysis, root: int, size: int, edit, consumer: Consumer) -> _Reader | None:
    """The consumer's view of the group, or None when it does not read the group once per channel."""
    columns = [[] for _ in range(size)]
    offset = 0
    for segment in edit.layouts[0]:
        if analysis.table.find(segment.group) == root:
            for channel in range(segment.start, segment.stop):
                columns[channel].append(offset + channel - segment.start)
        offset += segment.size
    if not columns[0] or any(len(c) != len(columns[0]) for c in columns):
        return None
    return reader_of(consumer, np.array(columns))


def reader_of(consumer: Consumer, columns: np.ndarray) -> _Reader:
    """The elimination state of a consumer whose input channels `columns[c]` carry the group's channel c."""
    taps = int(np.prod(consumer.kernel))
    entries = (columns[:, :, None] * taps + np.arange(taps)).reshape(len(columns), -1)
    weight = consumer.weight if consumer.bias is None else np.concatenate(
        [consumer.weight, consumer.bias[:, None]], axis=1)
    sigma = consumer.sigma
    ridge = RIDGE * max(float(np.mean(np.diag(sigma))), 1e-12)  # a floor: a consumer may read only zeros
    inverse = np.linalg.inv(sigma + ridge * np.eye(len(sigma)))
    projected = sigma @ weight.T  # (entries, outputs): multiplied first, the products stay entries² x outputs
    energy = float(np.sum(weight.T * projected))
    return _Reader(entries, inverse, inverse @ projected, np.arange(len(sigma)), max(energy, 1e-12))


def _eliminate(size: int, readers: list[_Reader]) -> np.ndarray:
    """Greedy backward elimination: channels in the order they are kept longest first."""
    alive = np.arange(size)
    removed: list[np.ndarray] = []
    per_step = max(1, size // STEPS)
    while len(alive) > 1:
        costs = sum(reader.costs(alive) for reader in readers)
        chosen = alive[np.argsort(costs, kind="stable")[:min(per_step, len(alive) - 1)]]
        for reader in readers:
            reader.remove(chosen)
        removed.append(chosen)
        alive = np.setdiff1d(alive, chosen)
    return np.concatenate([alive, *removed[::-1]]).astype(np.int64)
