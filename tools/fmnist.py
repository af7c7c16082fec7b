"""Fashion-MNIST few-shot benchmark: real labelled images, a trained ResNet-20 teacher, tiny calibration folders.

The teacher reads grey 28x28 images scaled to 0..1 (pixel/255, graphopt's "unit" preset), so a user can
reproduce its preprocessing from the PNG folders this module writes.

    python -m tools.fmnist train            # train (cached), export ONNX, record test top-1 in a JSON beside it
    python -m tools.fmnist sample           # write calibration folders of 10/50/100/500 images for seeds 0-2
    python -m tools.fmnist eval MODEL.onnx  # top-1 on the 10,000 test images through onnxruntime
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from graphopt.errors import GraphoptError
from graphopt.machine import cpu_name
from graphopt.model_io import save_model
from tools.bench.common import BenchDataMissing, cache_dir, export_torchscript, predict, run_cli

DATA_DIR = Path(os.environ.get("GRAPHOPT_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CALIB_SIZES = (10, 50, 100, 500)
CALIB_SEEDS = (0, 1, 2)
INPUT_SPEC = {"name": "input", "layout": "NCHW", "shape": [None, 1, 28, 28], "color": "grey", "resize": "direct",
              "preset": "unit", "scale": 1 / 255, "mean": [0.0], "std": [1.0]}
# Changing anything here retrains: the cache folder is named after a hash of this recipe.
RECIPE = {"arch": "resnet20", "widths": [16, 32, 64], "blocks_per_stage": 3, "stem_stride": 2, "epochs": 15,
          "batch": 128,
          "lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4, "augment": "flip+shift2", "seed": 0}


# --------------------------------------------------------------------------- data

def _read_idx(path: Path) -> np.ndarray:
    """Decode one gzipped IDX file (big-endian header: magic, then one int32 per dimension)."""
    if not path.is_file():
        raise BenchDataMissing(f"Fashion-MNIST file {path} is missing: install the Debian package "
                               f"dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist, or "
                               f"bash tools/install_bench_data.sh)")
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise GraphoptError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise GraphoptError(f"{path} is truncated: header says {tuple(dims)}, holds {data.size} values")
    return data.reshape(tuple(int(d) for d in dims))


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the 'train' (60,000) or 'test' (10,000) split."""
    if split not in FILES:
        raise GraphoptError(f"unknown Fashion-MNIST split '{split}' (choose train or test)")
    images_file, labels_file = FILES[split]
    images, labels = _read_idx(DATA_DIR / images_file), _read_idx(DATA_DIR / labels_file)
    if len(images) != len(labels):
        raise GraphoptError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in 0..1, exactly what the teacher was trained on."""
    return (images.astype(np.float32) / 255.0)[:, None]


# --------------------------------------------------------------------------- teacher

class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus shortcut; identity shortcut unless the stage changes width or stride."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers) on 1-channel 28x28.

    A stride-2 stem puts the stages at 14, 7 and 4 pixels: a quarter of the multiply-adds of stride 1, which is
    what lets the teacher train on the full training set in minutes on a 2-core CPU.
    """

    def __init__(self, widths: list[int], blocks_per_stage: int, stem_stride: int = 1, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for stage, width in enumerate(widths, start=1):
            blocks = [BasicBlock(cin if i == 0 else width, width, 1 if stage == 1 or i else 2)
                      for i in range(blocks_per_stage)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            cin = width
        self.fc = nn.Linear(cin, classes)
        self.stages = len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def teacher_dir() -> Path:
    """Cache folder of the teacher trained with RECIPE."""
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir(f"fmnist-{RECIPE['arch']}-{digest}")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (zero fill), per image."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (2, 2, 2, 2))[:, 0]
    dy, dx = torch.randint(0, 5, (2, len(x), 1), generator=gen)
    grid = torch.arange(28)
    rows, cols = (dy + grid)[:, :, None], (dx + grid)[:, None, :]
    return padded[torch.arange(len(x))[:, None, None], rows, cols][:, None]


def _accuracy_torch(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            logits = model(torch.from_numpy(preprocess(images[start:start + 1000])))
            correct += int((logits.argmax(1).numpy() == labels[start:start + 1000]).sum())
    return correct / len(images)


def train_teacher(threads: int = 1, log: Callable[[str], None] = print) -> dict:
    """Train on all 60,000 training images with RECIPE (seeded), export ONNX, evaluate, write the JSON.

    Returns the JSON record; a second call finds the cached teacher and returns at once.
    """
    out = teacher_dir()
    record_path = out / "teacher.json"
    if record_path.is_file() and (out / "teacher.onnx").is_file():
        return json.loads(record_path.read_text())
    torch.set_num_threads(threads)
    torch.manual_seed(RECIPE["seed"])
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    images, labels = load_split("train")
    x_all, y_all = torch.from_numpy(preprocess(images)), torch.from_numpy(labels)
    model = ResNetCifar(RECIPE["widths"], RECIPE["blocks_per_stage"], RECIPE["stem_stride"])
    test_images, test_labels = load_split("test")
    steps_per_epoch = len(x_all) // RECIPE["batch"]
    total = steps_per_epoch * RECIPE["epochs"]
    opt = torch.optim.SGD(model.parameters(), lr=RECIPE["lr"], momentum=RECIPE["momentum"], nesterov=True,
                          weight_decay=RECIPE["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=RECIPE["lr"], total_steps=total, pct_start=0.25)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(RECIPE["epochs"]):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * RECIPE["batch"]:(step + 1) * RECIPE["batch"]]
            loss = F.cross_entropy(model(_augment(x_all[idx], gen)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        log(f"epoch {epoch + 1}/{RECIPE['epochs']}: loss {running / steps_per_epoch:.4f}, "
            f"top-1 on 1,000 test images {_accuracy_torch(model, test_images[:1000], test_labels[:1000]):.3f}, "
            f"{time.perf_counter() - start:.0f} s", flush=True)
    train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    torch_top1 = _accuracy_torch(model, test_images, test_labels)
    torch.save(model.state_dict(), out / "teacher.pt")
    export_onnx(model, out / "teacher.onnx")
    onnx_top1 = evaluate(out / "teacher.onnx")
    record = {"model": str(out / "teacher.onnx"), "recipe": RECIPE, "input": INPUT_SPEC, "output": "logits",
              "classes": list(CLASSES), "test_top1": onnx_top1, "test_top1_torch": torch_top1,
              "train_seconds": round(train_seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
              "train_threads": threads,
              "cpu": cpu_name(), "torch": torch.__version__}
    record_path.write_text(json.dumps(record, indent=2))
    return record


def export_onnx(model: nn.Module, path: Path) -> None:
    """ONNX export (TorchScript exporter, opset 17, dynamic batch), written atomically to `path`."""
    save_model(export_torchscript(model, torch.zeros(1, 1, 28, 28), path.with_suffix(".tmp.onnx")), path)


# --------------------------------------------------------------------------- calibration sets and evaluation

def sample_calibration(n: int, seed: int, root: Path | None = None) -> Path:
    """Write `n` training images drawn with `seed` as PNGs (what a user hands graphopt); reuses a complete folder.

    Indices and labels go to `<folder>.json` beside the folder, for reference: the folder holds images only,
    exactly what a user would hand graphopt, which never sees the labels.
    """
    if n <= 0:
        raise GraphoptError(f"calibration size must be positive, got {n}")
    folder = (root or cache_dir("fmnist-calib")) / f"n{n}-seed{seed}"
    manifest = folder.with_suffix(".json")
    if manifest.is_file() and len(list(folder.glob("*.png"))) == n:
        return folder
    images, labels = load_split("train")
    if n > len(images):
        raise GraphoptError(f"calibration size {n} exceeds the {len(images)} training images")
    picks = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for index in picks:
        Image.fromarray(images[index], mode="L").save(folder / f"train{index:05d}.png")
    manifest.write_text(json.dumps({"n": n, "seed": seed, "indices": picks.tolist(),
                                    "labels": labels[picks].tolist(), "input": INPUT_SPEC}, indent=2))
    return folder


def evaluate(model, limit: int | None = None, threads: int | None = None) -> float:
    """Top-1 of any ONNX classifier (path or ModelProto) on the first `limit` (default all 10,000) test images."""
    images, labels = load_split("test")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    logits = predict(model, preprocess(images), batch=500, threads=threads)
    if logits.ndim != 2 or logits.shape[1] != len(CLASSES):
        raise GraphoptError(f"model output has shape {logits.shape}, expected (N, {len(CLASSES)}) logits")
    return float((logits.argmax(1) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fmnist", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    train = sub.add_parser("train", help="train (or find cached) the teacher and export it")
    train.add_argument("--threads", type=int, default=1, help="torch threads (1 wastes least CPU on a shared machine)")
    sample = sub.add_parser("sample", help="write calibration image folders")
    sample.add_argument("--sizes", type=int, nargs="+", default=list(CALIB_SIZES))
    sample.add_argument("--seeds", type=int, nargs="+", default=list(CALIB_SEEDS))
    sample.add_argument("--out", type=Path, default=None)
    ev = sub.add_parser("eval", help="top-1 of an ONNX model on the test images")
    ev.add_argument("model")
    ev.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        record = train_teacher(args.threads)
        print(f"teacher {record['model']}: test top-1 {record['test_top1']:.4f}, trained in "
              f"{record['train_seconds']:.0f} s wall ({record['train_cpu_seconds']:.0f} s CPU) on "
              f"{record['train_threads']} thread(s)")
    elif args.cmd == "sample":
        for n in args.sizes:
            for seed in args.seeds:
                print(sample_calibration(n, seed, args.out))
    else:
        print(f"top-1 {evaluate(args.model, args.limit):.4f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
