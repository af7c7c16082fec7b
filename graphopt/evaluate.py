"""Labelled top-1/top-5 accuracy and agreement of ONNX classifiers on a folder of images (`graphopt eval`).

Why: accelerate can only measure agreement with the original on a few held-out calibration images, but what decides
whether a faster ImageNet model is good enough is its labelled accuracy on photos calibration never saw, with an
interval that says whether a difference is real. This scores every model on the same images, decoded and
preprocessed exactly as accelerate prepares calibration images (calibration/data/images.py, calibration/data/preprocess.py),
and run on onnxruntime (CPU), so a user can check what accelerate gave them with the preprocessing options they gave
accelerate.

Labels come from class sub-folders or a labels file (graphopt/labels.py). Without labels only agreement with the
first model is reported. Images are decoded one batch at a time, so a folder of any size is scored in bounded memory; intervals are
Wilson 95% score intervals, which stay inside [0, 1] and behave at rates near 0 or 1.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm.auto import tqdm

from graphopt.calibration.data.images import Folder, decode_rgb, read_sample, scan
from graphopt.calibration.data.preprocess import Preprocess, input_dims
from graphopt.errors import GraphoptError, first_line
from graphopt.labels import resolve_labels
from graphopt.model_io import load_model
from graphopt.output import table
from graphopt.runtime.inputs import input_dtype, runtime_inputs
from graphopt.runtime.onnxrt import make_session

Z95 = 1.959963984540054  # two-sided 95% normal quantile
PREPROCESS_KEYS = frozenset({"size", "norm", "mean", "std", "bgr", "resize"})

log = logging.getLogger(__name__)


def wilson(hits: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate hits/total (95% by default); (0, 1) when there is nothing to count."""
    if total <= 0:
        return 0.0, 1.0
    p = hits / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if hits <= 0 else max(0.0, centre - half)  # exact at the ends, where rounding would leave 1e-16
    return low, 1.0 if hits >= total else min(1.0, centre + half)


@dataclass(frozen=True)
class ModelScore:
    """What one model scored: counts, and rates with their 95% intervals (None where there are no labels)."""

    name: str
    path: str | None
    images: int
    agree_top1: int
    top1_correct: int | None
    top5_correct: int | None
    preprocess: dict = field(default_factory=dict)

    @property
    def top1(self) -> float | None:
        return self._rate(self.top1_correct)

    @property
    def top1_interval(self) -> tuple[float, float] | None:
        return self._interval(self.top1_correct)

    @property
    def top5(self) -> float | None:
        return self._rate(self.top5_correct)

    @property
    def top5_interval(self) -> tuple[float, float] | None:
        return self._interval(self.top5_correct)

    @property
    def agreement_top1(self) -> float:
        return self._rate(self.agree_top1)

    @property
    def agreement_top1_interval(self) -> tuple[float, float]:
        return self._interval(self.agree_top1)

    def _rate(self, count: int | None) -> float | None:
        return None if count is None else count / self.images

    def _interval(self, count: int | None) -> tuple[float, float] | None:
        return None if count is None else wilson(count, self.images)

    def to_dict(self) -> dict:
        def pair(interval: tuple[float, float] | None) -> list[float] | None:
            return None if interval is None else list(interval)

        return {"name": self.name, "path": self.path, "images": self.images,
                "top1": self.top1, "top1_interval": pair(self.top1_interval), "top1_correct": self.top1_correct,
                "top5": self.top5, "top5_interval": pair(self.top5_interval), "top5_correct": self.top5_correct,
                "agreement_top1": self.agreement_top1, "agreement_top1_interval": pair(self.agreement_top1_interval),
                "agreement_top1_count": self.agree_top1, "preprocess": self.preprocess}


@dataclass(frozen=True)
class Evaluation:
    """Every model scored on the same images; agreement is with the first model."""

    images: str
    labels: str | None  # where labels came from ("class folders", "labels file PATH"), None: agreement only
    classes: int
    scored: int
    skipped: tuple[str, ...]
    models: tuple[ModelScore, ...]
    # with keep_scores: each model's class scores (images x classes) and the labels (None without), in one order
    scores: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)
    truth: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def to_dict(self) -> dict:
        return {"images": self.images, "labels": self.labels, "classes": self.classes, "images_scored": self.scored,
                "skipped": list(self.skipped), "agreement_reference": self.models[0].name,
                "interval": "Wilson 95%", "models": [m.to_dict() for m in self.models]}


@dataclass(frozen=True)
class _Model:
    name: str
    session: ort.InferenceSession
    preprocess: Preprocess
    input_name: str
    dtype: np.dtype
    fixed_batch: int | None


@dataclass
class _Tally:
    images: int = 0
    agree: int = 0
    top1: int = 0
    top5: int = 0
    kept: list[np.ndarray] | None = None  # every batch's class scores, when they are kept

    def add(self, scores: np.ndarray, reference: np.ndarray, target: np.ndarray | None) -> None:
        if self.kept is not None:
            self.kept.append(scores)
        top1 = scores.argmax(1)
        self.images += len(top1)
        self.agree += int((top1 == reference).sum())
        if target is not None:
            self.top1 += int((top1 == target).sum())
            top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]  # stable: ties rank like argmax
            self.top5 += int((top5 == target[:, None]).any(1).sum())


def evaluate(models: list[str | os.PathLike | onnx.ModelProto], images: str | os.PathLike,
             labels: str | os.PathLike | None = None, classes: str | os.PathLike | None = None,
             preprocess: dict | None = None, batch: int = 32, threads: int | None = None,
             progress: bool = True, keep_scores: bool = False) -> Evaluation:
    """Score each model on the images in `images`: top-1/top-5 accuracy where there are labels, and top-1 agreement
    with the first model, each with a Wilson 95% interval.

    labels: a file of `NAME LABEL` lines (names relative to `images` or to the labels file's folder); without it,
    labels come from class sub-folders when the images sit in them, else only agreement is scored.
    classes: a file with one class name (wnid) per line, in the model's index order (`n01440764 tench` lines too).
    preprocess: accelerate's image settings (size, norm, mean, std, bgr, resize), applied to every model.
    keep_scores: also hand back every model's class scores and the labels, image by image (the accuracy floor's
    paired estimate needs them).
    """
    if not models:
        raise GraphoptError("give at least one model to evaluate")
    if batch < 1:
        raise GraphoptError(f"batch size must be positive, got {batch}")
    unknown = sorted(set(preprocess or {}) - PREPROCESS_KEYS)
    if unknown:
        raise GraphoptError(f"unknown preprocessing setting(s) {', '.join(unknown)}: "
                            f"choose from {', '.join(sorted(PREPROCESS_KEYS))}")
    names = _model_names(models)
    opened = [_open_model(m, n, preprocess or {}, threads) for m, n in zip(models, names)]
    counts = {m.name: _class_count(m) for m in opened}
    if len(set(counts.values())) > 1:
        raise GraphoptError("the models differ in class count (" + ", ".join(f"{n}: {c}" for n, c in counts.items())
                            + "); their first outputs must score the same classes")
    class_total = counts[names[0]]
    folder = _image_folder(images)
    truth, source = resolve_labels(folder, labels, classes, class_total)
    tallies, skipped = _score(opened, folder, truth, batch, progress, keep_scores)
    scored = tallies[0].images
    if scored == 0:
        raise GraphoptError(f"none of the {len(folder.images)} images in {folder.root} could be read "
                            f"(for example {skipped[0]})")
    labelled = truth is not None
    results = tuple(ModelScore(
        name=m.name, path=None if isinstance(src, onnx.ModelProto) else str(src), images=t.images, agree_top1=t.agree,
        top1_correct=t.top1 if labelled else None, top5_correct=t.top5 if labelled and class_total >= 5 else None,
        preprocess=_describe(m.preprocess)) for m, t, src in zip(opened, tallies, models))
    kept = tuple(np.concatenate(t.kept) for t in tallies) if keep_scores else ()
    labels_kept = None
    if keep_scores and labelled:
        readable = set(skipped)
        labels_kept = np.array([truth[name] for name in _names(folder) if name not in readable])
    return Evaluation(str(folder.root), source, class_total, scored, tuple(skipped), results, kept, labels_kept)


def format_table(evaluation: Evaluation) -> str:
    """The plain-text table `graphopt eval` prints, with one line saying what was scored."""
    top5 = evaluation.labelled and evaluation.models[0].top5_correct is not None
    headers = ["model"]
    if evaluation.labelled:
        headers += ["top-1", "95% interval"] + (["top-5", "95% interval"] if top5 else [])
    headers += ["top-1 agreement", "95% interval", "images"]
    rows = []
    for model in evaluation.models:
        row: list = [model.name]
        if evaluation.labelled:
            row += [model.top1, _span(model.top1_interval)]
            row += [model.top5, _span(model.top5_interval)] if top5 else []
        rows.append(row + [model.agreement_top1, _span(model.agreement_top1_interval), model.images])
    first = evaluation.models[0].name
    note = (f"labels from {evaluation.labels}" if evaluation.labelled
            else "no labels: top-1 agreement only")
    lines = [table(headers, rows), f"{evaluation.scored} images in {evaluation.images}, {evaluation.classes} classes; "
             f"{note}; agreement is with {first}; intervals are Wilson 95%"]
    if evaluation.skipped:
        lines.append(f"skipped {len(evaluation.skipped)} unreadable files (first: {evaluation.skipped[0]})")
    return "\n".join(lines)


def _span(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"


def _describe(preprocess: Preprocess) -> dict:
    record = asdict(preprocess)
    for key in ("aug_scale", "aug_flip"):
        record.pop(key)
    return record


# --------------------------------------------------------------------------- models

def _model_names(models: list) -> list[str]:
    """File names, full paths where two files share a name, `model N` for in-memory models."""
    names = [f"model {i + 1}" if isinstance(m, onnx.ModelProto) else Path(m).name for i, m in enumerate(models)]
    if len(set(names)) < len(names):
        names = [f"model {i + 1}" if isinstance(m, onnx.ModelProto) else str(m) for i, m in enumerate(models)]
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    return names


def _open_model(source, name: str, preprocess: dict, threads: int | None) -> _Model:
    model = load_model(source)
    inputs = runtime_inputs(model)
    if len(inputs) != 1:
        raise GraphoptError(f"{name} has {len(inputs)} inputs; eval scores single-input image classifiers")
    try:
        settings = Preprocess.for_model(model, **preprocess)
    except GraphoptError as exc:
        raise GraphoptError(f"{name}: {exc}") from None
    dims = input_dims(inputs[0])
    session = make_session(model, threads, spin=False)
    return _Model(name, session, settings, inputs[0].name, input_dtype(inputs[0]), dims[0] if dims else None)


def _class_count(model: _Model) -> int:
    """Classes the first output scores, from one run on a blank input (this also checks the output's shape)."""
    blank = np.zeros((model.fixed_batch or 1, model.preprocess.channels, *model.preprocess.size), model.dtype)
    return int(_scores(model, blank).shape[1])


def _scores(model: _Model, inputs: np.ndarray) -> np.ndarray:
    """First output as (N, classes); a fixed batch is filled by repeating the last input."""
    step = model.fixed_batch or len(inputs)
    outputs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start:start + step]
        pad = step - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        try:
            scores = np.asarray(model.session.run(None, {model.input_name: chunk})[0])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise GraphoptError(f"onnxruntime cannot run {model.name}: {first_line(exc)}") from None
        if scores.ndim < 2 or scores.shape[0] != step or any(d != 1 for d in scores.shape[2:]):
            raise GraphoptError(f"the first output of {model.name} has shape {scores.shape}, not class scores "
                                f"(batch, classes)")
        outputs.append(scores.reshape(step, -1)[:step - pad])
    return np.concatenate(outputs).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- images

def _image_folder(images: str | os.PathLike) -> Folder:
    try:
        folder = scan(images)
    except GraphoptError as exc:  # scan speaks of calibration folders; here the folder holds evaluation images
        message = str(exc)
        raise GraphoptError("image " + message[len("calibration "):] if message.startswith("calibration ")
                            else message) from None
    if folder.arrays:
        raise GraphoptError(f"{folder.root} holds .npy tensors; eval scores image files")
    return folder


def _names(folder: Folder) -> list[str]:
    return [path.relative_to(folder.root).as_posix() for path in folder.images]


def _score(models: list[_Model], folder: Folder, truth: dict[str, int] | None, batch: int,
           progress: bool, keep: bool = False) -> tuple[list[_Tally], list[str]]:
    """Decode the images a batch at a time and tally every model's predictions on each batch."""
    tallies, skipped = [_Tally(kept=[] if keep else None) for _ in models], []
    settings = list(dict.fromkeys(m.preprocess for m in models))  # models that share preprocessing share inputs
    with tqdm(total=len(folder.images), desc="eval", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(folder.images), batch):
            paths = folder.images[start:start + batch]
            stored, files = _decode(folder, paths, settings, skipped)
            bar.update(len(paths))
            if not files:
                continue
            target = None if truth is None else np.array([truth[f] for f in files])
            inputs = {s: s.evaluate(stored[s]).numpy() for s in settings}
            reference = None
            for model, tally in zip(models, tallies):
                scores = _scores(model, inputs[model.preprocess].astype(model.dtype, copy=False))
                reference = scores.argmax(1) if reference is None else reference
                tally.add(scores, reference, target)
    if skipped:
        log.warning("skipped %d of %d files in %s that could not be read (first: %s)", len(skipped),
                    len(folder.images), folder.root, skipped[0])
    return tallies, skipped


def _decode(folder: Folder, paths: list[Path], settings: list[Preprocess],
            skipped: list[str]) -> tuple[dict[Preprocess, torch.Tensor], list[str]]:
    """Each readable image resized at once to every stored size (uint8), so no full-size image outlives its
    decoding; unreadable files are added to `skipped`."""
    stored: dict[Preprocess, list[torch.Tensor]] = {s: [] for s in settings}
    files = []
    for path in paths:
        name = path.relative_to(folder.root).as_posix()
        sample = read_sample(folder, path, lambda data, _: decode_rgb(data))
        if sample is None:
            skipped.append(name)
            continue
        for setting in settings:
            stored[setting].append(setting.fit(sample[1]))
        files.append(name)
    return ({s: torch.stack(images) for s, images in stored.items()} if files else {}), files
