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


class ConcatNet(torch.nn.Module):
    """DenseNet-style growth by concatenation, a channel Split, and an SE-style gate: the channel ties that are
    not residual adds."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.grow1 = self._growth(16)
        self.grow2 = self._growth(24)
        self.gate = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(16, 4, 1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(4, 16, 1), torch.nn.Sigmoid())
        self.left = torch.nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.right = torch.nn.Conv2d(20, 16, 1)
        self.head = torch.nn.Linear(28, 10)

    @staticmethod
    def _growth(channels: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
                                   torch.nn.Conv2d(channels, 8, 3, padding=1))

    def forward(self, x):
        x = self.stem(x)
        x = x * self.gate(x)
        x = torch.cat([x, self.grow1(x)], 1)
        x = torch.cat([x, self.grow2(x)], 1)
        left, right = torch.split(x, [12, 20], dim=1)
        x = torch.cat([self.left(left), self.right(right)], 1)
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


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
    "concat_net": (ConcatNet, 16, 0, 0),
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


class _Basic(torch.nn.Module):
    def __init__(self, channels: int, stride: int = 1, width_in: int | None = None):
        super().__init__()
        width_in = width_in or channels
        self.conv1 = torch.nn.Conv2d(width_in, channels, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)
        self.down = None if stride == 1 and width_in == channels else torch.nn.Sequential(
            torch.nn.Conv2d(width_in, channels, 1, stride, bias=False), torch.nn.BatchNorm2d(channels))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class TinyResNet(torch.nn.Module):
    """A CIFAR-style ResNet small enough for end-to-end tests: 3 stages of 2 basic blocks (4 droppable)."""

    def __init__(self, classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(width),
                                        torch.nn.ReLU())
        self.layer1 = torch.nn.Sequential(_Basic(width), _Basic(width))
        self.layer2 = torch.nn.Sequential(_Basic(2 * width, 2, width), _Basic(2 * width))
        self.layer3 = torch.nn.Sequential(_Basic(4 * width, 2, 2 * width), _Basic(4 * width))
        self.fc = torch.nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    _randomise_batchnorm(model)
    return model


def write_images(folder: Path, count: int, size: int = 24, seed: int = 0) -> Path:
    """Real PNG/JPEG files with smooth random colour patterns (decoded by graphopt like any user's images)."""
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
        image.save(folder / (f"img{i:03d}.png" if i % 2 else f"img{i:03d}.jpg"))
    return folder

