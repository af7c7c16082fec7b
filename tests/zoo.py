"""Real torchvision architectures (random weights) exported by both torch.onnx exporters, cached per test session."""
from __future__ import annotations

import functools
from pathlib import Path

import onnx
import torch
import torchvision
from torchvision.models import VisionTransformer


def tiny_vit() -> torch.nn.Module:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


# name -> (builder, input size, residual blocks, droppable blocks): the counts the architectures really have.
ARCHITECTURES = {
    "resnet18": (torchvision.models.resnet18, 64, 8, 5),
    "resnet50": (torchvision.models.resnet50, 64, 16, 12),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 64, 10, 10),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, 64, 6, 6),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, 64, 9, 9),
    "regnet_x_400mf": (torchvision.models.regnet_x_400mf, 64, 22, 18),
    "convnext_tiny": (torchvision.models.convnext_tiny, 64, 18, 18),
    "vit": (tiny_vit, 32, 4, 4),
}
EXPORTERS = ("torchscript", "dynamo")


@functools.lru_cache(maxsize=None)
def torch_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    builder = ARCHITECTURES[name][0]
    model = builder().eval()
    _randomise_batchnorm(model)
    return model


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    size = ARCHITECTURES[name][1]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def export(model: torch.nn.Module, x: torch.Tensor, path: Path, exporter: str) -> Path:
    """Export with a dynamic batch, as users do; TorchScript at opset 17, dynamo at its default opset."""
    if exporter == "torchscript":
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), verbose=False)
    return path


def exported(name: str, exporter: str, folder: Path) -> onnx.ModelProto:
    path = folder / f"{name}-{exporter}.onnx"
    if not path.exists():
        export(torch_model(name), example_input(name), path, exporter)
    return onnx.load(str(path))


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial statistics so folded biases exist and numerics are meaningful."""
    generator = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
