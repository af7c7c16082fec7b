"""A calibration folder -> samples in memory: images (decoded by PIL) or .npy tensors for models whose inputs are
not images.

Every file is read once: its bytes give both the sample and the content digest that fingerprints the set.
Files that cannot be decoded are skipped and reported in one warning, so one bad file never stops a run.
A file over the size limits below (bytes on disk, pixels or array bytes its header declares) is refused before
anything is read or decoded, with a warning of its own, and skipped like an unreadable one: a 70-byte PNG can
declare 60000x60000 pixels (10.8 GB to decode) and a sparse file can be hundreds of GB.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

from graphopt.calibration.data.preprocess import Preprocess
from graphopt.errors import GraphoptError
from graphopt.runtime.inputs import check_input_bytes

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})  # how PIL opens 16-bit grey PNGs
ARRAY_SUFFIX = ".npy"
# The most pixels an image header may declare: PIL's default Image.MAX_IMAGE_PIXELS (its decompression-bomb limit),
# 89.5 megapixels, 256 MiB as 8-bit RGB. Above what phones save by default and what most cameras take (only 100+ MP
# sensor modes and medium format exceed it; such files need downscaling first). The image is shrunk to the model's
# input anyway, so a larger one only costs memory (decoding it takes 3 bytes a pixel, or more).
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# The most bytes one calibration file (image or .npy) may hold: 512 MiB. An uncompressed 8-bit RGBA image at
# MAX_PIXELS is 358 MB and a compressed photo tens of MB; a .npy sample that size is 134 million float32 values,
# and every sample is held in memory at once. It bounds what reading one file costs (its bytes, one copy to decode).
MAX_FILE_BYTES = 512 * 2**20
# What decoders raise on a damaged or foreign file (torchvision: RuntimeError; PIL: OSError and its own, its
# decompression-bomb warning included, as decode_rgb makes it an error; OverLimit is a ValueError).
DECODE_ERRORS = (RuntimeError, OSError, ValueError, EOFError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")  # the declared size in PIL's decompression-bomb message

log = logging.getLogger(__name__)


class OverLimit(ValueError):
    """A file over MAX_FILE_BYTES or a header declaring more than the limits allow; the message says what it is
    and the limit. A ValueError, so code that skips unreadable files (DECODE_ERRORS) skips these too."""


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
    """Decode every image to RGB and keep it as uint8 at `preprocess.stored_size` in the model's channels; a set
    that would not fit in a quarter of memory at that size is refused before any is decoded."""
    check_input_bytes("calibration images", (len(folder.images), preprocess.channels, *preprocess.stored_size),
                      np.uint8)
    return _load(folder, folder.images, lambda data, path: preprocess.fit(decode_rgb(data)))


def decode_rgb(data: bytes) -> torch.Tensor:
    """Encoded bytes -> uint8 RGB (3, H, W), EXIF orientation applied; grey, palette, CMYK, alpha, 16-bit and
    animated images are converted (alpha dropped, first frame kept).

    The header is read (by PIL, which reads nothing else) and checked against the pixel limit before anything is
    decoded; PIL's decompression-bomb warning is an error throughout. Raises OverLimit. PIL decodes every format:
    torchvision's PNG decoder ends the process with a segmentation fault on a PNG whose compressed data is short
    ("libpng error: Not enough image data"), where PIL decodes what is there."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open_checked(data) as pil:
            return _to_rgb(pil)


def _to_rgb(pil: Image.Image) -> torch.Tensor:
    """Decode a checked image: first frame, EXIF orientation, 16-bit grey scaled to 8 bits, every mode to RGB."""
    image = ImageOps.exif_transpose(pil)
    if image.mode in SIXTEEN_BIT_MODES:
        image = Image.fromarray((np.asarray(image).astype(np.uint32) // 257).astype(np.uint8), "L")
    return F.pil_to_tensor(image.convert("RGB"))


def _open_checked(data: bytes) -> Image.Image:
    """The image opened lazily by PIL (header only), refused with OverLimit when it declares more pixels than
    the limit. PIL's own decompression-bomb check in `open` (an error here, by the caller) refuses first while
    Image.MAX_IMAGE_PIXELS is PIL's default, and its message gives the declared pixels; ours still holds where the
    host program raised or lifted PIL's limit."""
    limit = pixel_limit()
    try:
        pil = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = _PIL_PIXELS.search(str(exc))
        declared = f"{int(found[1]):,} pixels" if found else f"more than {limit:,} pixels"
        raise OverLimit(f"its header declares {declared}, over the limit of {limit:,} pixels") from None
    width, height = pil.size
    if width * height > limit:
        pil.close()
        raise OverLimit(f"its header declares {width}x{height} pixels, over the limit of {limit:,} pixels")
    return pil


def pixel_limit() -> int:
    """MAX_PIXELS, or PIL's Image.MAX_IMAGE_PIXELS where the host program lowered it (PIL then refuses first)."""
    pil = Image.MAX_IMAGE_PIXELS
    return MAX_PIXELS if pil is None else min(MAX_PIXELS, pil)


def read_limited(path: Path) -> bytes:
    """A file's bytes, refused with OverLimit above MAX_FILE_BYTES: by its size on disk before anything is read
    (a sparse file can claim hundreds of GB), and by a bounded read (a file that grows, or lies about its size)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise OverLimit(f"it is {size:,} bytes ({_size(size)}), over the limit of {_size(MAX_FILE_BYTES)} per file")
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OverLimit(f"it holds more than the limit of {_size(MAX_FILE_BYTES)} per file")
    return data


def load_arrays(folder: Folder, shape: tuple[int | None, ...], dtype: np.dtype, input_name: str) -> Samples:
    """Load one sample per .npy file, cast to the input dtype; `shape` is the input without its batch
    dimension (None where dynamic, but then all samples must agree)."""

    def decode(data: bytes, path: Path) -> torch.Tensor:
        _check_npy_header(data)
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


def _check_npy_header(data: bytes) -> None:
    """Refuse a .npy whose header declares more array bytes than the file could hold, before np.load allocates
    them: it allocates the declared array first and reads after, so a 100-byte file declaring 7 TiB is a
    MemoryError (or, where the allocation succeeds lazily, gigabytes reserved for nothing). Over MAX_FILE_BYTES
    is OverLimit; more than the bytes that follow the header is a truncated file (ValueError, as np.load says)."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(stream)
    declared = math.prod(shape) * dtype.itemsize
    if declared > MAX_FILE_BYTES:
        raise OverLimit(f"its header declares {_size(declared)} of array data ({'x'.join(map(str, shape))} "
                        f"{dtype}), over the limit of {_size(MAX_FILE_BYTES)} per file")
    if declared > len(data) - stream.tell():
        raise ValueError(f"truncated .npy: its header declares {declared} bytes of data")


def read_sample(folder: Folder, path: Path, decode: Callable[[bytes, Path], torch.Tensor]
                ) -> tuple[bytes, torch.Tensor] | None:
    """A file's bytes and its decoded sample, or None when it cannot be read; a file over a size limit gets a
    warning of its own, naming what it holds and the limit."""
    try:
        data = read_limited(path)
        return data, decode(data, path)
    except OverLimit as exc:
        log.warning("calibration file %s skipped: %s", path.relative_to(folder.root).as_posix(), exc)
    except DECODE_ERRORS:
        pass
    return None


def _load(folder: Folder, paths: list[Path], decode: Callable[[bytes, Path], torch.Tensor]) -> Samples:
    """Read and decode each file (`read_sample`), skip the unreadable ones with one warning, stack the rest."""
    tensors, files, digests, skipped = [], [], [], []
    for path in paths:
        name = path.relative_to(folder.root).as_posix()
        sample = read_sample(folder, path, decode)
        if sample is None:
            skipped.append(name)
            continue
        tensors.append(sample[1])
        files.append(name)
        digests.append(hashlib.sha256(sample[0]).hexdigest())
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
        parts.append(f"skipped {len(skipped)} of {total} files that could not be read ({listing(skipped)})")
    if folder.others:
        others = [p.relative_to(folder.root).as_posix() for p in folder.others]
        parts.append(f"ignored {_count(len(others), 'file')} of other kinds ({listing(others)})")
    if parts:
        log.warning("calibration folder %s: %s", folder.root, "; ".join(parts))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def listing(names: list[str], shown: int = 3) -> str:
    """The first few names and how many more, for one-line messages."""
    return ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")


def _size(n: int) -> str:
    """Bytes for people: 512 MiB, 200 GiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
