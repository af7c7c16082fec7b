"""The README's example: export a ResNet-18, list its blocks, drop two, and measure the latency ratio."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchvision


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="graphopt-example-"))
    model = folder / "resnet18.onnx"
    torch.onnx.export(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 224, 224),), str(model),
                      dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    fast = folder / "resnet18-fast.onnx"
    for argv in (["blocks", model], ["drop", model, "--blocks", "layer1.1,layer2.1", "-o", fast],
                 ["bench", model, fast, "--repeats", "20"]):
        print(f"$ graphopt {' '.join(map(str, argv))}", flush=True)
        subprocess.run([sys.executable, "-m", "graphopt", *map(str, argv)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
