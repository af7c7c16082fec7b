"""Calibration data: real image files of every kind, real ONNX models, checked against hand computation."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.data.preprocess import NORM_PRESETS, Preprocess
from graphopt.errors import GraphoptError

RNG = np.random.default_rng(0)


class TinyNet(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _export(path, channels, hw, dynamic_axes):
    torch.onnx.export(TinyNet(channels).eval(), torch.zeros(2, channels, *hw), str(path), dynamo=False,
                      input_names=["pixels"], output_names=["logits"], dynamic_axes=dynamic_axes)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "rgb": _export(root / "rgb.onnx", 3, (32, 32), {"pixels": {0: "n"}}),
        "grey_batch2": _export(root / "grey.onnx", 1, (28, 28), None),
        "dynamic_hw": _export(root / "dyn.onnx", 3, (32, 32), {"pixels": {0: "n", 2: "h", 3: "w"}}),
        "rgb_path": root / "rgb.onnx",
    }


def _rgb(h=32, w=32):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array, mode=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **kwargs)
    return path


def _reference(path, mode="RGB"):
    """What the pixels are, decoded by PIL, on 0..1, as (C, H, W)."""
    array = np.asarray(Image.open(path).convert(mode), dtype=np.float32) / 255
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


@pytest.fixture
def zoo(tmp_path):
    """A nested folder with every supported format and colour mode, plus files that must be skipped."""
    root = tmp_path / "calib"
    pixels = _rgb()
    _save(root / "a_rgb.png", pixels)
    _save(root / "b_rgb.jpg", pixels, quality=95)
    _save(root / "nested" / "deeper" / "c_rgb.bmp", pixels)
    _save(root / "nested" / "d_rgb.webp", pixels, lossless=True)
    _save(root / "e_grey.png", pixels, "L")
    _save(root / "f_palette.png", pixels, "P")
    _save(root / "g_cmyk.jpg", pixels, "CMYK", quality=95)
    _save(root / "h_rgba.png", np.dstack([pixels, RNG.integers(0, 256, (32, 32), dtype=np.uint8)]))
    _save(root / "i_palette.bmp", pixels, "P")
    _save(root / "j_grey.jpg", pixels, "L", quality=95)
    _save(root / "k_rgba.webp", np.dstack([pixels, np.full((32, 32), 128, np.uint8)]), lossless=True)
    frames = [Image.fromarray(pixels).convert("P"), Image.fromarray(_rgb()).convert("P")]
    frames[0].save(root / "l_animated.gif", save_all=True, append_images=frames[1:])
    (root / "nested" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10)
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("labels are elsewhere\n")
    (root / ".cache").mkdir()
    _save(root / ".cache" / "thumb.png", pixels)
    return root


def test_every_format_and_colour_mode_decodes_to_the_pixels(zoo, models, caplog):
    with caplog.at_level(logging.WARNING):
        calib = load_calibration(zoo, models["rgb"], norm="unit", resize="direct")
    assert calib.files == ("a_rgb.png", "b_rgb.jpg", "e_grey.png", "f_palette.png", "g_cmyk.jpg", "h_rgba.png",
                           "i_palette.bmp", "j_grey.jpg", "k_rgba.webp", "l_animated.gif",
                           "nested/d_rgb.webp",
                           "nested/deeper/c_rgb.bmp")
    x = calib.tensors()
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    for i, name in enumerate(calib.files):
        lossy = name.endswith(".jpg")
        np.testing.assert_allclose(x[i].numpy(), _reference(zoo / name), atol=3 / 255 if lossy else 1e-6,
                                   err_msg=name)
    grey = x[calib.files.index("e_grey.png")]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 2 of 14 files" in message and "corrupt.jpg" in message and "empty.png" in message
    assert "ignored 1 file of other kinds (notes.txt)" in message and "thumb" not in message


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path, models):
    values = RNG.integers(0, 65536, (32, 32), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    x = load_calibration(tmp_path, models["rgb"], norm="unit", resize="direct").tensors()
    np.testing.assert_allclose(x[0, 0].numpy(), np.floor(values / 257) / 255, atol=1 / 255 + 1e-6)


@pytest.fixture
def one_image(tmp_path):
    pixels = _rgb()
    _save(tmp_path / "img" / "x.png", pixels)
    return tmp_path / "img", pixels.transpose(2, 0, 1).astype(np.float64)


@pytest.mark.parametrize("settings, mean, std", [
    ({"norm": "imagenet"}, np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255),
    ({"norm": "tf"}, np.full(3, 127.0), np.full(3, 128.0)),
    ({"norm": "unit"}, np.zeros(3), np.full(3, 255.0)),
    ({"mean": (100, 110, 120), "std": (50, 60, 70)}, np.array([100, 110, 120.0]), np.array([50, 60, 70.0])),
    ({"mean": 0.5, "std": 0.25}, np.full(3, 127.5), np.full(3, 63.75)),
])
def test_normalisation_matches_hand_computation(one_image, models, settings, mean, std):
    folder, pixels = one_image
    x = load_calibration(folder, models["rgb"], resize="direct", **settings).tensors()[0].numpy()
    np.testing.assert_allclose(x, (pixels - mean[:, None, None]) / std[:, None, None], rtol=1e-5, atol=1e-5)


def test_bgr_reverses_channels_and_the_preset(one_image, models):
    folder, pixels = one_image
    x = load_calibration(folder, models["rgb"], resize="direct", bgr=True).tensors()[0].numpy()
    mean, std = (np.array(v)[::-1, None, None] * 255 for v in NORM_PRESETS["imagenet"])
    np.testing.assert_allclose(x, (pixels[::-1] - mean) / std, rtol=1e-5, atol=1e-5)
    explicit = load_calibration(folder, models["rgb"], resize="direct", bgr=True,
                                mean=(103.94, 116.78, 123.68), std=1 / 0.017).tensors()[0].numpy()
    np.testing.assert_allclose(explicit, (pixels[::-1] - [[[103.94]], [[116.78]], [[123.68]]]) * 0.017, atol=1e-4)


def test_one_channel_model_gets_grey(tmp_path, models):
    colour, grey = _rgb(28, 28), RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    _save(tmp_path / "colour.jpg", colour, quality=100)
    _save(tmp_path / "grey.png", grey)
    calib = load_calibration(tmp_path, models["grey_batch2"], norm="unit", resize="direct")
    x = calib.tensors()
    assert x.shape == (2, 1, 28, 28) and calib.preprocess.mean == (0.0,)
    np.testing.assert_allclose(x[1, 0].numpy(), grey / 255, atol=1e-6)
    decoded = _reference(tmp_path / "colour.jpg")
    luma = 0.2989 * decoded[0] + 0.587 * decoded[1] + 0.114 * decoded[2]
    np.testing.assert_allclose(x[0, 0].numpy(), luma, atol=1.5 / 255)
    assert load_calibration(tmp_path, models["grey_batch2"]).preprocess.mean == pytest.approx((0.449,))


def test_crop_policy_matches_the_imagenet_eval_transform(tmp_path, models):
    pixels = _rgb(48, 64)
    _save(tmp_path / "wide.png", pixels)
    calib = load_calibration(tmp_path, models["rgb"], norm="unit")
    assert calib.data.shape == (1, 3, 37, 37)  # round(32 / 0.875): room for augmentation
    reference = v2.Compose([v2.Resize(37, antialias=True), v2.CenterCrop(32)])(
        torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
    np.testing.assert_allclose(calib.tensors()[0].numpy(), reference.numpy() / 255, atol=1e-6)


def test_dynamic_size_needs_a_size_and_a_static_one_must_match(one_image, models):
    folder, _ = one_image
    with pytest.raises(GraphoptError, match="dynamic height or width; give the image size with --size"):
        load_calibration(folder, models["dynamic_hw"])
    assert load_calibration(folder, models["dynamic_hw"], size=(24, 40)).tensors().shape == (1, 3, 24, 40)
    assert load_calibration(folder, models["dynamic_hw"], size=20, resize="direct").tensors().shape == (1, 3, 20, 20)
    with pytest.raises(GraphoptError, match="size 64x64 does not match the model input 'pixels' of 32x32"):
        load_calibration(folder, models["rgb"], size=64)


def _assert_one_line(error, text):
    assert text in str(error.value) and "\n" not in str(error.value)


def test_bad_folders_are_clear_errors(tmp_path, zoo, models):
    cases = {"not found": tmp_path / "missing", "is not a folder": zoo / "a_rgb.png"}
    (tmp_path / "empty").mkdir()
    cases["is empty"] = tmp_path / "empty"
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.md").write_text("#")
    cases["no images or .npy tensors in"] = tmp_path / "texts"
    (tmp_path / "broken").mkdir()
    shutil.copy(zoo / "nested" / "corrupt.jpg", tmp_path / "broken")
    shutil.copy(zoo / "empty.png", tmp_path / "broken")
    cases["none of the 2 files in"] = tmp_path / "broken"
    np.save(zoo / "stray.npy", np.zeros((3, 32, 32)))
    cases["mixes images and .npy tensors"] = zoo
    for text, folder in cases.items():
        with pytest.raises(GraphoptError) as error:
            load_calibration(folder, models["rgb"])
        _assert_one_line(error, text)


@pytest.mark.parametrize("settings, text", [
    ({"norm": "caffe"}, "unknown normalisation 'caffe'"),
    ({"mean": (0.5, 0.5, 0.5)}, "give both --mean and --std"),
    ({"mean": (0.5, 0.5), "std": 0.5}, "--mean has 2 values; the model input has 3 channel(s)"),
    ({"mean": 0.5, "std": 0}, "std must be positive"),
    ({"resize": "stretch"}, "unknown resize policy 'stretch'"),
])
def test_bad_preprocessing_settings_are_clear_errors(one_image, models, settings, text):
    with pytest.raises(GraphoptError) as error:
        load_calibration(one_image[0], models["rgb"], **settings)
    _assert_one_line(error, text)


def test_grey_models_refuse_bgr_and_images_need_one_or_three_channels():
    with pytest.raises(GraphoptError, match="BGR order needs a 3-channel input"):
        Preprocess((28, 28), mean=(0.0,), std=(1.0,), channels=1, bgr=True)
    with pytest.raises(GraphoptError, match="1- or 3-channel input, not 4; give a folder of .npy tensors"):
        Preprocess((28, 28), mean=(0.0,) * 4, std=(1.0,) * 4, channels=4)


def test_npy_folder_is_cast_to_the_input_dtype_and_shape_checked(tmp_path, models, caplog):
    samples = [RNG.standard_normal((3, 32, 32)) for _ in range(3)]
    for i, sample in enumerate(samples):
        np.save(tmp_path / f"s{i}.npy", sample)
    (tmp_path / "s9.npy").write_bytes(b"\x93NUMPY truncated")
    with caplog.at_level(logging.WARNING):
        calib = load_calibration(tmp_path, models["rgb"])
    assert calib.preprocess is None and len(calib) == 3 and "skipped 1 of 4 files" in caplog.text
    x = calib.tensors()
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(x.numpy(), np.stack(samples).astype(np.float32))
    assert torch.equal(calib.augmented(torch.Generator().manual_seed(0)), x)
    assert torch.equal(calib.with_views(3), x)  # samples that are not images come back once, not four times
    np.save(tmp_path / "s3.npy", np.zeros((1, 3, 32, 32)))
    with pytest.raises(GraphoptError) as error:
        load_calibration(tmp_path, models["rgb"])
    _assert_one_line(error, "s3.npy has shape 1x3x32x32; input 'pixels' takes 3x32x32 per sample")
    (tmp_path / "s3.npy").unlink()
    np.save(tmp_path / "s3.npy", np.zeros((3, 32, 32), dtype=np.complex64))
    with pytest.raises(GraphoptError, match="s3.npy holds complex64; input 'pixels' takes float32"):
        load_calibration(tmp_path, models["rgb"])


def test_npy_samples_with_dynamic_dimensions_must_agree(tmp_path, models):
    np.save(tmp_path / "a.npy", np.zeros((3, 20, 24), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((3, 20, 24), np.float32))
    assert load_calibration(tmp_path, models["dynamic_hw"]).tensors().shape == (2, 3, 20, 24)
    np.save(tmp_path / "c.npy", np.zeros((3, 20, 28), np.float32))
    with pytest.raises(GraphoptError, match="differ in shape"):
        load_calibration(tmp_path, models["dynamic_hw"])


@pytest.fixture
def ten_images(tmp_path):
    for i in range(10):
        _save(tmp_path / "photos" / f"{i:02d}.jpg", _rgb(40 + i, 50))
    return tmp_path / "photos"


def test_augmentation_is_seeded_reproducible_and_leaves_global_rng_alone(ten_images, models):
    calib = load_calibration(ten_images, models["rgb"])
    torch.manual_seed(123)
    expected_global = torch.rand(3)
    torch.manual_seed(123)
    first = calib.augmented(torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3), expected_global)
    assert first.shape == (10, 3, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, calib.augmented(torch.Generator().manual_seed(7)))
    assert not torch.equal(first, calib.augmented(torch.Generator().manual_seed(8)))
    generator = torch.Generator().manual_seed(7)
    epoch1, epoch2 = calib.augmented(generator), calib.augmented(generator)
    assert torch.equal(epoch1, first) and not torch.equal(epoch1, epoch2)
    assert not torch.equal(first, calib.tensors())
    assert torch.equal(calib.tensors(), calib.tensors())


def test_split_is_by_file_seeded_and_keeps_both_sides_non_empty(ten_images, models):
    calib = load_calibration(ten_images, models["rgb"])
    train, held = calib.split(0.25, seed=0)
    assert (len(train), len(held)) == (8, 2)
    assert sorted(train.files + held.files) == list(calib.files) and not set(train.files) & set(held.files)
    index = calib.files.index(held.files[0])
    assert torch.equal(held.tensors()[0], calib.tensors()[index])
    assert calib.split(0.25, seed=0)[1].files == held.files
    assert {calib.split(0.25, seed=s)[1].files for s in range(5)} != {held.files}
    assert len(calib.split(0.01)[1]) == 1 and len(calib.split(0.99)[0]) == 1
    with pytest.raises(GraphoptError, match="at least 2 distinct calibration files"):
        held.split(0.5)[1].split(0.5)
    with pytest.raises(GraphoptError, match="between 0 and 1"):
        calib.split(1.0)


def test_copies_of_one_file_never_land_on_both_sides(ten_images, models):
    for i in range(3):  # the same photo three more times under other names
        shutil.copy(ten_images / "03.jpg", ten_images / f"copy{i}.jpg")
    calib = load_calibration(ten_images, models["rgb"])
    assert len(calib) == 13 and calib.sources() == 10
    for seed in range(8):
        train, held = calib.split(0.3, seed=seed)
        assert not set(train.digests) & set(held.digests)
        assert train.sources() + held.sources() == 10 and held.sources() == 3
    with pytest.raises(GraphoptError, match="have 1"):
        calib.split(0.3)[1].head(1).split(0.5)


def test_fingerprint_follows_contents_and_settings_not_location(ten_images, tmp_path, models):
    calib = load_calibration(ten_images, models["rgb"])
    assert calib.fingerprint() == load_calibration(ten_images, models["rgb"]).fingerprint()
    moved = shutil.copytree(ten_images, tmp_path / "elsewhere")
    assert load_calibration(moved, models["rgb"]).fingerprint() == calib.fingerprint()
    assert load_calibration(ten_images, models["rgb"], norm="tf").fingerprint() != calib.fingerprint()
    assert calib.split(0.3)[0].fingerprint() != calib.fingerprint()
    _save(moved / "03.jpg", _rgb(43, 50))
    assert load_calibration(moved, models["rgb"]).fingerprint() != calib.fingerprint()


def test_feeds_run_on_onnxruntime(ten_images, models):
    calib = load_calibration(ten_images, models["rgb_path"])
    session = ort.InferenceSession(str(models["rgb_path"]), providers=["CPUExecutionProvider"])
    batches = list(calib.feeds(4))
    assert [b["pixels"].shape[0] for b in batches] == [4, 4, 2]
    assert all(b["pixels"].dtype == np.float32 for b in batches)
    logits = np.concatenate([session.run(None, b)[0] for b in batches])
    assert logits.shape == (10, 5)
    np.testing.assert_allclose(logits, session.run(None, {"pixels": calib.tensors().numpy()})[0], atol=1e-5)


def test_feeds_respect_a_fixed_batch(ten_images, models):
    calib = load_calibration(ten_images, models["grey_batch2"])
    assert calib.fixed_batch == 2
    assert [b["pixels"].shape for b in calib.feeds()] == [(2, 1, 28, 28)] * 5
    with pytest.raises(GraphoptError, match="fixed batch of 2; cannot feed batches of 4"):
        next(calib.feeds(4))
    with pytest.raises(GraphoptError, match="fixed batch of 2; the calibration set has only 1 samples"):
        next(calib.split(0.1)[1].feeds())


def test_views_follow_the_images_and_repeat_with_the_seed(tmp_path, models):
    for i in range(3):
        Image.fromarray(_rgb(40, 48)).save(tmp_path / f"p{i}.png")
    calib = load_calibration(tmp_path, models["rgb"])
    views = calib.with_views(2, seed=5)
    assert views.shape == (9, 3, 32, 32) and torch.equal(views[:3], calib.tensors())
    assert not torch.equal(views[3:6], views[6:9])  # two different crops of each image
    assert torch.equal(views, calib.with_views(2, seed=5)) and not torch.equal(views, calib.with_views(2, seed=6))
    assert torch.equal(calib.with_views(0), calib.tensors())
