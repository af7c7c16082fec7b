"""Preprocessing that matches the model: size and channels from its input, the normalisation it was trained with.

Images are kept as uint8 at a "stored" size a little larger than the crop (`fit`), so evaluation (`evaluate`) and
per-epoch augmentation (`augment`) are cheap tensor operations on images already in memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from graphopt.errors import GraphoptError
from graphopt.runtime.inputs import check_input_bytes, input_dtype, runtime_inputs

# Mean and std on pixels scaled to 0..1, in RGB order.
NORM_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tf": ((127 / 255,) * 3, (128 / 255,) * 3),  # (x - 127) / 128 on 0..255
    "unit": ((0.0,) * 3, (1.0,) * 3),
}
RESIZE_POLICIES = ("crop", "direct")


@dataclass(frozen=True)
class Preprocess:
    """How a decoded uint8 image becomes the model's input.

    size: (H, W) of the model input. mean/std: per channel, on pixels scaled to 0..1, in the model's channel order.
    resize: "crop" resizes to cover round(size / crop_fraction) and centre-crops `size` (the ImageNet convention);
    "direct" resizes straight to `size`. aug_scale/aug_flip: the mild augmentation used for recovery training.
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = NORM_PRESETS["imagenet"][0]
    std: tuple[float, ...] = NORM_PRESETS["imagenet"][1]
    channels: int = 3
    bgr: bool = False
    resize: str = "crop"
    crop_fraction: float = 0.875
    aug_scale: tuple[float, float] = (0.5, 1.0)
    aug_flip: bool = True

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise GraphoptError(f"bad input size {self.size}: expected two positive numbers (H, W)")
        check_input_bytes("image", (self.channels, *self.size), np.float32)
        if self.channels not in (1, 3):
            raise GraphoptError(f"image calibration needs a 1- or 3-channel input, not {self.channels}; "
                                "give a folder of .npy tensors instead")
        if self.bgr and self.channels != 3:
            raise GraphoptError("BGR order needs a 3-channel input")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise GraphoptError(f"mean and std need {self.channels} value(s) each for a {self.channels}-channel "
                                f"input, got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise GraphoptError(f"mean and std must be finite numbers, got mean {self.mean} and std {self.std}")
        if min(self.std) <= 0:
            raise GraphoptError(f"std must be positive, got {self.std}")
        if self.resize not in RESIZE_POLICIES:
            raise GraphoptError(f"unknown resize policy '{self.resize}': choose {' or '.join(RESIZE_POLICIES)}")
        if not 0 < self.crop_fraction <= 1:
            raise GraphoptError(f"crop fraction must be in (0, 1], got {self.crop_fraction}")

    @classmethod
    def for_model(cls, model: onnx.ModelProto, size: int | tuple[int, int] | None = None, norm: str = "imagenet",
                  mean: float | tuple[float, ...] | None = None, std: float | tuple[float, ...] | None = None,
                  bgr: bool = False, resize: str = "crop") -> Preprocess:
        """Settings for the model's first input (NCHW): channels and H, W from its shape, `size` where dynamic.

        Presets are given in RGB and follow the channel order (reversed for BGR, averaged for grey). Explicit
        mean/std are in the model's channel order, on 0..1 pixels, or on 0..255 pixels when any value exceeds 1.
        """
        value = runtime_inputs(model)[0]
        static = input_dims(value)
        if len(static) != 4:
            raise GraphoptError(f"input '{value.name}' has rank {len(static)}, not an NCHW image; "
                                "give a folder of .npy tensors instead")
        if input_dtype(value).kind != "f":
            raise GraphoptError(f"input '{value.name}' takes {input_dtype(value)}, not float images; "
                                "give a folder of .npy tensors instead")
        channels = static[1]
        if channels not in (1, 3):
            raise GraphoptError(f"input '{value.name}' has {channels or 'a dynamic number of'} channels in "
                                "dimension 1; image calibration needs NCHW with 1 or 3 channels "
                                "(give a folder of .npy tensors instead)")
        model_hw = (static[2], static[3])
        if size is not None:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if any(m is not None and m != s for m, s in zip(model_hw, size)):
                raise GraphoptError(f"size {size[0]}x{size[1]} does not match the model input "
                                    f"'{value.name}' of {model_hw[0] or '?'}x{model_hw[1] or '?'}")
        elif None in model_hw:
            raise GraphoptError(f"input '{value.name}' has a dynamic height or width; give the image size with --size")
        else:
            size = model_hw
        mean, std = _normalisation(norm, mean, std, channels, bgr)
        return cls(size=tuple(size), mean=mean, std=std, channels=channels, bgr=bgr, resize=resize)

    @property
    def stored_size(self) -> tuple[int, int]:
        """Size images are kept at in memory: room around the crop for augmentation, or the input size itself."""
        if self.resize == "direct":
            return self.size
        return tuple(round(s / self.crop_fraction) for s in self.size)

    def fit(self, image: torch.Tensor) -> torch.Tensor:
        """A decoded RGB uint8 (3, h, w) image in the model's channels, resized and cropped to `stored_size`."""
        image = self.to_channels(image)
        th, tw = self.stored_size
        if self.resize == "direct":
            return F.resize(image, [th, tw], antialias=True)
        h, w = image.shape[-2:]
        scale = max(th / h, tw / w)  # cover the target, keeping the aspect ratio (short side for a square)
        image = F.resize(image, [max(th, round(h * scale)), max(tw, round(w * scale))], antialias=True)
        return F.center_crop(image, [th, tw])

    def to_channels(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB -> the model's channels; an image whose channels are all equal is grey already and kept exact."""
        if self.channels == 3:
            return rgb.flip(0) if self.bgr else rgb
        if torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2]):
            return rgb[:1]
        return F.rgb_to_grayscale(rgb)

    def evaluate(self, stored: torch.Tensor) -> torch.Tensor:
        """Deterministic model input from stored uint8 images (N, C, h, w) -> float32 (N, C, H, W)."""
        return self.normalise(F.center_crop(stored, list(self.size)))

    def augmenter(self) -> v2.Transform:
        """Random resized crop (mild scale range) and horizontal flip on one stored uint8 image."""
        steps = [v2.RandomResizedCrop(list(self.size), scale=self.aug_scale, antialias=True)]
        if self.aug_flip:
            steps.append(v2.RandomHorizontalFlip())
        return v2.Compose(steps)

    def augment(self, stored: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A fresh augmented float32 batch; reproducible from the generator's state, which it advances.

        torchvision draws from torch's global generator, so it runs seeded from `generator` inside fork_rng,
        leaving the caller's global random state untouched.
        """
        seed = int(torch.randint(2**62, (1,), generator=generator))
        augment = self.augmenter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images = torch.stack([augment(image) for image in stored])
        return self.normalise(images)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 on 0..1 -> (x - mean) / std."""
        return F.normalize(F.to_dtype(images, torch.float32, scale=True), list(self.mean), list(self.std))


def input_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """The input's dimensions, None where dynamic."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def _normalisation(norm: str, mean: float | tuple[float, ...] | None, std: float | tuple[float, ...] | None,
                   channels: int, bgr: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on 0..1 pixels, in the model's channel order."""
    if mean is None and std is None:
        if norm not in NORM_PRESETS:
            raise GraphoptError(f"unknown normalisation '{norm}': choose {', '.join(NORM_PRESETS)} "
                                "or give --mean/--std")
        mean, std = NORM_PRESETS[norm]
        if channels == 1:
            return (sum(mean) / 3,), (sum(std) / 3,)
        return (mean[::-1], std[::-1]) if bgr else (mean, std)
    if mean is None or std is None:
        raise GraphoptError("give both --mean and --std, or neither")
    mean, std = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
    scale = 255.0 if max(mean + std) > 1 else 1.0
    return tuple(m / scale for m in mean), tuple(s / scale for s in std)


def _per_channel(values: float | tuple[float, ...], channels: int, what: str) -> tuple[float, ...]:
    values = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise GraphoptError(f"--{what} has {len(values)} values; the model input has {channels} channel(s)")
    return values
