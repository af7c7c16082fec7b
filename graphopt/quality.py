"""How many points of top-1 accuracy a faster model loses, estimated without labels, with an upper bound.

Counting top-1 flips on a few held-out images overstates the loss: on labelled ImageNet photos onnxruntime INT8
flips 2.2% of EfficientNet-Lite0's predictions yet loses 0.1 points of accuracy, because the flips fall where the
original itself is unsure and often wrong. Here each flip costs what the original's own class probabilities say it
costs: with p the original's softmax, an image contributes p[original's class] - p[new class]. If the original is
calibrated, its probability that its class is right is p[original's class], and that the new class is right is
p[new class], so the mean of these terms estimates the expected fall in labelled accuracy; agreeing images cost 0.

The upper bound is a one-sided 95% percentile bootstrap over source images (the augmented views of one image are
resampled together), which is what an accuracy floor is judged by: a model passes when even the bound is inside.

Given labelled images (accelerate --eval), the loss is measured, not estimated: per image, whether the original was
right less whether the model is, bounded by the same bootstrap (paired: an image's two results are resampled
together, so the bound reflects the images where the two differ, not each model's own spread).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
UPPER_QUANTILE = 95


@dataclass(frozen=True)
class DropEstimate:
    """Estimated fall in top-1 accuracy, in points, with its one-sided 95% upper bound, from `images` source images
    (`views` rows in all); `agreement` is the plain top-1 agreement over the same rows; `labelled`: measured
    against labels rather than estimated from the original's probabilities."""

    points: float
    upper: float
    agreement: float
    images: int
    views: int
    labelled: bool = False

    def within(self, floor: float) -> bool:
        """Whether even the upper bound loses no more than `floor` points."""
        return self.upper <= floor

    def to_dict(self) -> dict:
        return asdict(self)


def expected_drop(original: np.ndarray, model: np.ndarray, groups: np.ndarray | None = None,
                  seed: int = 0) -> DropEstimate:
    """The loss of `model` against `original` from their class scores (rows: views, columns: classes).

    `groups` gives each row's source image (rows of one image are resampled together); None: one image per row.
    """
    if original.shape != model.shape or original.ndim != 2 or len(original) == 0:
        raise ValueError(f"class scores of different or empty shapes: {original.shape} and {model.shape}")
    probabilities = _softmax(original.astype(np.float64))
    rows = np.arange(len(original))
    theirs, ours = original.argmax(1), model.argmax(1)
    cost = probabilities[rows, theirs] - probabilities[rows, ours]  # 0 where they agree, else > 0
    groups = rows if groups is None else np.asarray(groups)
    sources, index = np.unique(groups, return_inverse=True)
    per_image = np.bincount(index, weights=cost) / np.bincount(index)  # each image weighs the same
    return DropEstimate(*_bounded(per_image, seed), agreement=float((theirs == ours).mean()), images=len(sources),
                        views=len(rows))


def labelled_drop(original: np.ndarray, model: np.ndarray, truth: np.ndarray, seed: int = 0) -> DropEstimate:
    """The measured fall in labelled top-1 of `model` against `original` on the same images (rows), in points,
    with the paired bootstrap's upper bound."""
    if original.shape != model.shape or original.ndim != 2 or len(original) != len(truth) or len(truth) == 0:
        raise ValueError(f"class scores and labels of different or empty shapes: {original.shape}, {model.shape} "
                         f"and {np.shape(truth)}")
    theirs, ours = original.argmax(1), model.argmax(1)
    per_image = (theirs == truth).astype(np.float64) - (ours == truth)
    return DropEstimate(*_bounded(per_image, seed), agreement=float((theirs == ours).mean()), images=len(truth),
                        views=len(truth), labelled=True)


def _bounded(per_image: np.ndarray, seed: int) -> tuple[float, float]:
    """(mean, one-sided 95% percentile-bootstrap upper bound), in points, of per-image losses."""
    rng = np.random.default_rng(seed)
    resampled = per_image[rng.integers(0, len(per_image), size=(BOOTSTRAP_RESAMPLES, len(per_image)))].mean(1)
    return 100 * float(per_image.mean()), 100 * float(np.percentile(resampled, UPPER_QUANTILE))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)
