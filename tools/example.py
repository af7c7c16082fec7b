"""The README's example: a ResNet-18 (random weights, 96 px) and 32 image files -> `graphopt accelerate`.

Real use starts from a trained model and real photos; this only shows the whole job running on any machine.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image


def write_images(folder: Path, count: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        Image.fromarray(coarse).resize((128, 128), Image.BICUBIC).save(folder / f"photo{i:02d}.jpg")
    return folder


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="graphopt-example-"))
    model = folder / "resnet18.onnx"
    warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
    torch.onnx.export(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 96, 96),), str(model),
                      dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    images = write_images(folder / "images", 32)
    fast = folder / "resnet18-fast.onnx"
    for argv in (["blocks", model],
                 ["accelerate", model, "--calib", images, "-o", fast, "--target-latency", "0.8",
                  "--score-iterations", "20", "--recover-iterations", "40", "--report", folder / "report.json"]):
        print(f"$ graphopt {' '.join(map(str, argv))}", flush=True)
        subprocess.run([sys.executable, "-m", "graphopt", *map(str, argv)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
