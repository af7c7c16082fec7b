"""A calibration folder -> samples in memory: images (decoded by torchvision, PIL only for the formats it lacks)
or .npy tensors for models whose inputs are not images.

Every file is read once: its bytes give both the sample and the content digest that fingerprints the set.
Files that cannot be decoded are skipped and reported in one warning, so one bad file never stops a run.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from graphopt.calibration.preprocess import Preprocess
from graphopt.errors import GraphoptError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
TORCHVISION_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
ARRAY_SUFFIX = ".npy"
# What decoders raise on a damaged or foreign file (torchvision: RuntimeError; PIL: OSError and its own).
DECODE_ERRORS = (RuntimeError, OSError, ValueError, EOFError, Image.DecompressionBombError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Folder:
    """A calibration folder's files (nested, sorted, hidden entries left out) sorted by kind."""

    root: Path
    images: list[Path]
    arrays: list[Path]
    others: list[Path]


@dataclass(frozen=True)
class Samples:
    """Decoded samples stacked in one tensor, with the relative path and content digest of each."""

    data: torch.Tensor
    files: tuple[str, ...]
    digests: tuple[str, ...]


def scan(folder: str | os.PathLike) -> Folder:
    """List a calibration folder; a missing, non-folder or empty one is an error."""
    root = Path(folder)
    if not root.exists():
        raise GraphoptError(f"calibration folder not found: {root}")
    if not root.is_dir():
        raise GraphoptError(f"calibration path is not a folder: {root}")
    files = sorted((p for p in root.rglob("*") if p.is_file() and not _hidden(p, root)),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise GraphoptError(f"calibration folder {root} is empty")
    kinds: dict[str, list[Path]] = {"image": [], "array": [], "other": []}
    for path in files:
        suffix = path.suffix.lower()
        kinds["image" if suffix in IMAGE_SUFFIXES else "array" if suffix == ARRAY_SUFFIX else "other"].append(path)
    if not kinds["image"] and not kinds["array"]:
        raise GraphoptError(f"no images or .npy tensors in {root} ({_count(len(files), 'other file')} there)")
    if kinds["image"] and kinds["array"]:
        raise GraphoptError(f"{root} mixes images and .npy tensors; give a folder of one kind")
    return Folder(root, kinds["image"], kinds["array"], kinds["other"])


def load_images(folder: Folder, preprocess: Preprocess) -> Samples:
    """Decode every image to RGB and keep it as uint8 at `preprocess.stored_size` in the model's channels."""
    return _load(folder, folder.images, lambda data, path: preprocess.fit(decode_rgb(data, path.suffix)))


def decode_rgb(data: bytes, suffix: str) -> torch.Tensor:
    """Encoded bytes -> uint8 RGB (3, H, W), EXIF orientation applied; grey, palette, CMYK, alpha, 16-bit and
    animated images are converted (alpha dropped, first frame kept)."""
    if suffix.lower() in TORCHVISION_SUFFIXES:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                             apply_exif_orientation=True)
    else:
        with Image.open(io.BytesIO(data)) as pil:
            image = F.pil_to_tensor(ImageOps.exif_transpose(pil).convert("RGB"))
    if image.ndim == 4:  # an animated GIF: its first frame, as PIL gives for the other formats
        image = image[0]
    return F.to_dtype(image, torch.uint8, scale=True)


def load_arrays(folder: Folder, shape: tuple[int | None, ...], dtype: np.dtype, input_name: str) -> Samples:
    """Load one sample per .npy file, cast to the input dtype; `shape` is the input without its batch
    dimension (None where dynamic, but then all samples must agree)."""

    def decode(data: bytes, path: Path) -> torch.Tensor:
        array = np.load(io.BytesIO(data), allow_pickle=False)
        name = path.relative_to(folder.root).as_posix()
        if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
            wanted = "x".join("?" if s is None else str(s) for s in shape)
            raise GraphoptError(f"{name} has shape {'x'.join(map(str, array.shape))}; input '{input_name}' "
                                f"takes {wanted} per sample (without the batch dimension)")
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise GraphoptError(f"{name} holds {array.dtype}; input '{input_name}' takes {dtype}")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))

    return _load(folder, folder.arrays, decode)


def _load(folder: Folder, paths: list[Path], decode: Callable[[bytes, Path], torch.Tensor]) -> Samples:
    """Read and decode each file, skip the unreadable ones with one warning, stack the rest."""
    tensors, files, digests, skipped = [], [], [], []
    for path in paths:
        name = path.relative_to(folder.root).as_posix()
        try:
            data = path.read_bytes()
            tensors.append(decode(data, path))
        except DECODE_ERRORS:
            skipped.append(name)
            continue
        files.append(name)
        digests.append(hashlib.sha256(data).hexdigest())
    if not tensors:
        raise GraphoptError(f"none of the {_count(len(paths), 'file')} in {folder.root} could be read "
                            f"(for example {skipped[0]})")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise GraphoptError(f"samples in {folder.root} differ in shape ({', '.join(map(str, sorted(shapes)))}); "
                            "they must all have the same")
    _warn(folder, skipped, len(paths))
    return Samples(torch.stack(tensors), tuple(files), tuple(digests))


def _warn(folder: Folder, skipped: list[str], total: int) -> None:
    """One warning for everything left out, so the user sees it without a flood of lines."""
    parts = []
    if skipped:
        parts.append(f"skipped {len(skipped)} of {total} files that could not be read ({_names(skipped)})")
    if folder.others:
        others = [p.relative_to(folder.root).as_posix() for p in folder.others]
        parts.append(f"ignored {_count(len(others), 'file')} of other kinds ({_names(others)})")
    if parts:
        log.warning("calibration folder %s: %s", folder.root, "; ".join(parts))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
