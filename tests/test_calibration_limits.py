"""Hostile calibration files: headers that declare more than memory holds, files larger than any photo, and token
ids outside the embedding table. Each over-limit file is skipped with a warning of its own before any decoder or
reader allocates what it declares; ids out of range are one error line at load, before any work."""
from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphopt.calibration.data import images
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.data.images import MAX_FILE_BYTES, MAX_PIXELS, load_arrays, load_images, scan
from graphopt.calibration.data.preprocess import Preprocess
from graphopt.cli import main
from graphopt.errors import GraphoptError
from tests import zoo

GOOD = 3  # good files beside the hostile ones


def _chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG (signature, IHDR, IDAT, IEND, correct CRCs) that declares width x height RGB pixels but holds
    a few bytes of image data: what a decoder would allocate, the file never pays for."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk space beyond `head`."""
    with path.open("wb") as file:
        file.write(head)
        file.truncate(size)
    return path


def _npy_header(shape: tuple[int, ...], dtype: str = "<i8") -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return stream.getvalue()


@pytest.fixture
def never_decoded(monkeypatch) -> set[bytes]:
    """File contents that must never be decoded (decoding allocates all the pixels a header declares); decoding
    one fails the test rather than allocating gigabytes."""
    forbidden: set[bytes] = set()
    decode = images._to_rgb

    def guarded(pil, *args, **kwargs) -> torch.Tensor:
        if pil.fp.getvalue() in forbidden:
            pytest.fail("a file over the limits reached the decoder")
        return decode(pil, *args, **kwargs)

    monkeypatch.setattr(images, "_to_rgb", guarded)
    return forbidden


def _hostile_images(folder: Path, forbidden: set[bytes]) -> dict[str, str]:
    """The three files of the bug report, each -> what its warning must say (declared size or bytes, limit)."""
    folder.mkdir(exist_ok=True)
    for side in (20000, 60000):
        data = _png_header_only(side, side)
        (folder / f"big{side}.png").write_bytes(data)
        forbidden.add(data)
    _sparse(folder / "zz.jpg", MAX_FILE_BYTES + 1, b"\xff\xd8\xff")
    limit = f"{MAX_PIXELS:,} pixels"
    return {"big20000.png": f"declares 400,000,000 pixels, over the limit of {limit}",
            "big60000.png": f"declares 3,600,000,000 pixels, over the limit of {limit}",
            "zz.jpg": f"it is {MAX_FILE_BYTES + 1:,} bytes (512 MiB), over the limit of 512 MiB per file"}


def _warnings(caplog) -> dict[str, str]:
    """Per-file skip warnings by file name."""
    prefix = "calibration file "
    return {m[len(prefix):].split(" ")[0]: m for m in caplog.messages if m.startswith(prefix)}


def _assert_skipped(caplog, expected: dict[str, str], total: int) -> None:
    warned = _warnings(caplog)
    assert set(warned) == set(expected), caplog.messages
    for name, text in expected.items():
        assert text in warned[name], warned[name]
    assert f"skipped {len(expected)} of {total} files that could not be read" in caplog.text


def test_images_over_the_limits_are_skipped_each_with_a_warning(tmp_path, never_decoded, caplog):
    folder = zoo.write_images(tmp_path / "calib", GOOD)
    expected = _hostile_images(folder, never_decoded)
    with caplog.at_level(logging.WARNING):
        samples = load_images(scan(folder), Preprocess((16, 16)))
    assert samples.files == ("img000.jpg", "img001.png", "img002.jpg") and len(samples.data) == GOOD
    _assert_skipped(caplog, expected, GOOD + 3)


def test_the_pixel_limit_holds_where_the_host_lifted_pils_own(tmp_path, never_decoded, monkeypatch, caplog):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    folder = zoo.write_images(tmp_path / "calib", GOOD)
    data = _png_header_only(20000, 20000)
    (folder / "big.png").write_bytes(data)
    never_decoded.add(data)
    with caplog.at_level(logging.WARNING):
        assert len(load_images(scan(folder), Preprocess((16, 16))).data) == GOOD
    _assert_skipped(caplog, {"big.png": f"declares 20000x20000 pixels, over the limit of {MAX_PIXELS:,}"}, GOOD + 1)


def test_a_folder_of_only_hostile_images_is_the_one_line_error(tmp_path, never_decoded, caplog):
    folder = tmp_path / "calib"
    expected = _hostile_images(folder, never_decoded)
    with caplog.at_level(logging.WARNING), pytest.raises(GraphoptError) as error:
        load_images(scan(folder), Preprocess((16, 16)))
    assert "none of the 3 files" in str(error.value) and "could be read" in str(error.value)
    assert "\n" not in str(error.value)
    assert set(_warnings(caplog)) == set(expected)


def test_an_animated_gif_is_decoded_one_frame_not_all(tmp_path):
    """Only the first frame is decoded (torchvision decoded every frame at once: a 236 KB GIF of 60 2000x2000 frames
    took 2 GB)."""
    frames = [Image.new("RGB", (64, 48), (40 * i, 0, 255 - 40 * i)) for i in range(6)]
    folder = tmp_path / "calib"
    folder.mkdir()
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    samples = load_images(scan(folder), Preprocess((48, 64), resize="direct"))
    assert samples.data.shape == (1, 3, 48, 64)
    assert samples.data[0, :, 0, 0].tolist() == [0, 0, 255]


def test_npy_files_over_the_limits_are_skipped_each_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(GOOD):
        np.save(folder / f"s{i}.npy", np.arange(8, dtype=np.int64) + i)
    (folder / "declares.npy").write_bytes(_npy_header((2**40,)) + b"\x00" * 64)  # 8 TiB declared, 64 bytes held
    _sparse(folder / "huge.npy", MAX_FILE_BYTES + 1, _npy_header(((MAX_FILE_BYTES + 1) // 8,)))
    with caplog.at_level(logging.WARNING):
        samples = load_arrays(scan(folder), (8,), np.dtype(np.int64), "ids")
    assert samples.files == ("s0.npy", "s1.npy", "s2.npy")
    _assert_skipped(caplog, {"declares.npy": "declares 8 TiB of array data (1099511627776 int64), over the limit of "
                                             "512 MiB per file",
                             "huge.npy": f"it is {MAX_FILE_BYTES + 1:,} bytes"}, GOOD + 2)


class _Bag(torch.nn.Module):
    """Token ids (N, 8) -> a 50-row embedding -> mean -> two Linear layers (channels for --methods filters)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(50, 16)
        self.hidden = torch.nn.Linear(16, 32)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.embedding(ids).mean(1))))


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bag") / "bag.onnx"
    return zoo.export(_Bag().eval(), torch.zeros(2, 8, dtype=torch.long), path, "torchscript")


def _ids(folder: Path, bad: dict[int, int], count: int = 12) -> Path:
    """`count` .npy samples of 8 ids in range, both ends included; sample i gets bad[i] as its third id."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        ids = np.concatenate([[-50, 49], rng.integers(-50, 50, 6)])
        if i in bad:
            ids[2] = bad[i]
        np.save(folder / f"s{i:02d}.npy", ids.astype(np.int64))
    return folder


def test_ids_out_of_the_embedding_range_are_refused_at_load(bag, tmp_path):
    folder = _ids(tmp_path / "ids", {})
    assert len(load_calibration(folder, bag)) == 12  # -50 and 49 index the table (ONNX Gather counts from the end)
    _ids(folder, {3: 1000, 7: -51})
    with pytest.raises(GraphoptError) as error:
        load_calibration(folder, bag)
    assert str(error.value).endswith("takes values from -50 to 49: s03.npy (1000), s07.npy (-51)"), error.value


def test_ids_out_of_range_are_one_error_line_and_nothing_written(bag, tmp_path, capsys):
    folder = _ids(tmp_path / "ids", {3: 1000, 7: -60})
    before = sorted(tmp_path.rglob("*"))
    argv = ["accelerate", str(bag), "--calib", str(folder), "-o", str(tmp_path / "out.onnx"), "--target-latency",
            "0.9", "--methods", "filters", "--no-cache", "--threads", "1", "--work-threads", "1", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("graphopt: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "input 'input'" in errors[0] and "s03.npy (1000), s07.npy (-60)" in errors[0], errors[0]
    assert "from -50 to 49" in errors[0]
    assert sorted(tmp_path.rglob("*")) == before


def test_a_png_with_short_image_data_does_not_end_the_process(tmp_path):
    """Complete chunks, one row of pixel data for a 100x100 image: torchvision's PNG decoder ended the process with
    a segmentation fault ("libpng error: Not enough image data"). Run in a child process so a crash fails the test
    instead of ending the suite."""
    folder = tmp_path / "calib"
    folder.mkdir()
    row = zlib.compress(b"\x00" + b"\x10" * 300)
    ihdr = struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0)
    (folder / "short.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", row)
                                       + _chunk(b"IEND", b""))
    code = ("import sys; from graphopt.calibration.data.images import load_images, scan; "
            "from graphopt.calibration.data.preprocess import Preprocess; "
            "print(load_images(scan(sys.argv[1]), Preprocess((16, 16))).files)")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "('short.png',)" in done.stdout, done.stderr
