"""The catalogue of bad input. Each bad case exits with its status and exactly one `graphopt: error:` line, writes
nothing and leaves every input as it was; inputs that only look odd (mixed images, a symlink loop in the
calibration folder, a damaged cache, --threads 0) must simply work."""
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

import graphopt
from graphopt.cli import main
from graphopt.errors import GraphoptError

FAST = ["--score-iterations", "2", "--recover-iterations", "2", "--repeats", "2", "--warmup", "1", "--min-seconds",
        "0", "--max-timing-seconds", "0", "--threads", "1", "--work-threads", "1", "--quiet"]


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every file (by content) and folder under `folders`, symlinks not followed: equal snapshots mean nothing was
    written, removed or changed."""
    seen = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            seen.update({os.path.join(root, d): "folder" for d in dirs})
            for name in files:
                path = Path(root, name)
                seen[str(path)] = "link" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def _opset_99(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 99


def _custom_op(model: onnx.ModelProto) -> None:
    relu = next(node for node in model.graph.node if node.op_type == "Relu")
    relu.op_type, relu.domain = "FancyRelu", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))


@dataclass
class _Case:
    """What a case builds its command line from: the tiny model, its images, a scratch folder, an output path."""

    model: Path
    images: Path
    tmp: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out.onnx"

    def file(self, name: str, data: bytes) -> Path:
        (self.tmp / name).write_bytes(data)
        return self.tmp / name

    def folder(self, name: str) -> Path:
        (self.tmp / name).mkdir()
        return self.tmp / name

    def junk(self) -> Path:
        """Files named like images that are not, and files that are not images at all."""
        folder = self.folder("junk")
        for i in range(3):
            (folder / f"photo{i}.jpg").write_bytes(b"not a jpeg")
            (folder / f"notes{i}.txt").write_text("hello")
        return folder

    def edited(self, edit) -> Path:
        model = onnx.load(str(self.model))
        edit(model)
        onnx.save(model, str(self.tmp / "edited.onnx"))
        return self.tmp / "edited.onnx"


def _accelerate(c: _Case, calib, out, *args) -> list:
    """An accelerate command line; `args` come last so they override FAST's."""
    return ["accelerate", c.model, "--calib", calib, "-o", out, "--no-cache", *FAST, *args]


# case -> (regular expression the error line matches, the command line built from a _Case); all exit with 1
CASES = {
    "missing-model": ("model not found",
        lambda c: ["drop", c.tmp / "missing.onnx", "--blocks", "layer1.0", "-o", c.out]),
    "empty-file": ("empty graph", lambda c: ["blocks", c.file("empty.onnx", b"")]),
    "text-file": ("not a readable ONNX model|empty graph", lambda c: ["blocks", c.file("t.onnx", b"hello\n" * 20)]),
    "truncated-model": ("not a readable ONNX model",
        lambda c: ["drop", c.file("cut.onnx", c.model.read_bytes()[:5000]), "--blocks", "layer1.0", "-o", c.out]),
    "random-bytes": ("not a readable ONNX model|empty graph|invalid",
        lambda c: ["bench", c.file("random.onnx", np.random.default_rng(0).bytes(4000))]),
    "folder-as-model": ("not a file", lambda c: ["blocks", c.images]),
    "unknown-block": ("unknown block id.*layer9.9",
        lambda c: ["drop", c.model, "--blocks", "layer1.0,layer9.9", "-o", c.out]),
    "projection-block": ("layer2.0.*projection", lambda c: ["drop", c.model, "--blocks", "layer2.0", "-o", c.out]),
    "duplicate-blocks-drop": ("more than once: layer1.0",
        lambda c: ["drop", c.model, "--blocks", "layer1.0,layer1.1,layer1.0", "-o", c.out]),
    "duplicate-blocks-accelerate": ("more than once: layer1.0",
        lambda c: _accelerate(c, c.images, c.out, "--blocks", "layer1.0,layer1.0")),
    "missing-calibration": ("not found", lambda c: _accelerate(c, c.tmp / "nowhere", c.out, "--drop", 1)),
    "empty-calibration": ("is empty", lambda c: _accelerate(c, c.folder("empty"), c.out, "--drop", 1)),
    "junk-calibration": ("could be read", lambda c: _accelerate(c, c.junk(), c.out, "--drop", 1)),
    "calibration-is-a-file": ("not a folder", lambda c: _accelerate(c, next(c.images.iterdir()), c.out, "--drop", 1)),
    "target-latency-0": ("between 0 and 1", lambda c: _accelerate(c, c.images, c.out, "--target-latency", 0)),
    "target-latency-1.5": ("between 0 and 1", lambda c: _accelerate(c, c.images, c.out, "--target-latency", 1.5)),
    "target-latency-negative": ("between 0 and 1", lambda c: _accelerate(c, c.images, c.out, "--target-latency", -1)),
    "target-ms-0": ("--target-ms must be a finite number of milliseconds above 0", lambda c: _accelerate(c, c.images, c.out, "--target-ms", 0)),
    "drop-0": ("at least 1", lambda c: _accelerate(c, c.images, c.out, "--drop", 0)),
    "time-budget-0": ("--time-budget must be a finite number of minutes above 0",
        lambda c: _accelerate(c, c.images, c.out, "--drop", 1, "--time-budget", 0)),
    "int8-on-cuda": ("--precision int8 is not available on --runtime onnxruntime-cuda",
        lambda c: _accelerate(c, c.images, c.out, "--drop", 1, "--runtime", "onnxruntime-cuda", "--precision", "int8")),
    "drop-999": ("4 droppable blocks", lambda c: _accelerate(c, c.images, c.out, "--drop", 999)),
    "output-folder-missing": ("does not exist",
        lambda c: ["drop", c.model, "--blocks", "layer1.0", "-o", c.tmp / "no" / "o.onnx"]),
    "output-folder-missing-accelerate": ("does not exist",
        lambda c: _accelerate(c, c.images, c.tmp / "no" / "o.onnx", "--drop", 1)),
    "output-is-input": ("never overwrites", lambda c: ["drop", c.model, "--blocks", "layer1.0", "-o", c.model]),
    "output-is-input-accelerate": ("never overwrites", lambda c: _accelerate(c, c.images, c.model, "--drop", 1)),
    "report-is-input": ("never overwrites",
        lambda c: _accelerate(c, c.images, c.out, "--drop", 1, "--report", c.model)),
    "output-is-a-folder": ("is a folder",
        lambda c: ["drop", c.model, "--blocks", "layer1.0", "-o", c.folder("out.onnx")]),
    "threads-negative-bench": ("--threads must be 0 .*or more", lambda c: ["bench", c.model, "--threads", -1]),
    "threads-negative-accelerate": ("--threads must be 0 .*or more",
        lambda c: _accelerate(c, c.images, c.out, "--drop", 1, "--threads", -1)),
    "batch-0": ("--batch must be at least 1", lambda c: ["bench", c.model, "--batch", 0]),
    "warmup-negative": ("--warmup must be at least 0 and at most", lambda c: ["bench", c.model, "--warmup", -1]),
    "bad-size": ("bad --size", lambda c: _accelerate(c, c.images, c.out, "--drop", 1, "--size", "big")),
    "opset-99": ("opset 99 is not supported.*opsets 7 to", lambda c: ["blocks", c.edited(_opset_99)]),
    "custom-domain-op": ("FancyRelu.*com.example",
        lambda c: ["drop", c.edited(_custom_op), "--blocks", "layer1.0", "-o", c.out]),
    "input-shape-not-an-input-blocks": ("'nope', which is not an input",
        lambda c: ["blocks", c.model, "--input-shape", "nope:1x3x16x16"]),
    "input-shape-not-an-input-bench": ("'nope', which is not an input",
        lambda c: ["bench", c.model, "--input-shape", "nope:1x3x16x16"]),
    "input-shape-not-an-input-accelerate": ("'nope', which is not an input",
        lambda c: _accelerate(c, c.images, c.out, "--drop", 1, "--input-shape", "nope:1x3x16x16")),
    "input-shape-unparsable": ("bad --input-shape", lambda c: ["blocks", c.model, "--input-shape", "1x3"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(case, tiny, tmp_path, capsys):
    pattern, argv = CASES[case]
    model, images = tiny
    argv = [str(a) for a in argv(_Case(model, images, tmp_path))]
    before = _snapshot(tmp_path, model.parent)
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("graphopt: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(pattern, errors[0]), errors[0]
    assert _snapshot(tmp_path, model.parent) == before, "an input changed or an output was written"


def _run_ok(capsys, c: _Case, calib: Path, *args) -> dict:
    """Run accelerate with a report, require success, and return the report."""
    report = c.tmp / "report.json"
    code = main([str(a) for a in ["accelerate", c.model, "--calib", calib, "-o", c.out, "--drop", 1, "--report",
                                  report, *FAST, *args]])
    assert code == 0, capsys.readouterr().err
    return json.loads(report.read_text())


def test_mixed_image_sizes_and_modes_work(tiny, tmp_path, capsys):
    c = _Case(*tiny, tmp_path)
    folder = c.folder("mixed")
    rng = np.random.default_rng(0)
    kinds = [("RGB", (20, 30), "png"), ("L", (64, 48), "png"), ("P", (17, 17), "bmp"), ("RGBA", (40, 24), "png"),
             ("CMYK", (33, 21), "jpg"), ("RGB", (16, 16), "webp")]
    for i, (mode, (width, height), suffix) in enumerate(kinds * 2):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"img{i}.{suffix}")
    before = _snapshot(folder, c.model.parent)
    assert _run_ok(capsys, c, folder, "--no-cache")["calibration"]["images"] == 12
    assert _snapshot(folder, c.model.parent) == before


def test_symlink_loops_in_the_calibration_folder_are_not_followed(tiny, tmp_path, capsys):
    c = _Case(*tiny, tmp_path)
    folder = c.folder("looped")
    for image in c.images.iterdir():
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "up").symlink_to(".")  # a cycle
    (folder / "a").symlink_to("b")  # a loop that never resolves
    (folder / "b").symlink_to("a")
    assert _run_ok(capsys, c, folder, "--no-cache")["calibration"]["images"] == 12


def test_corrupted_cache_is_recomputed(tiny, tmp_path, capsys):
    c = _Case(*tiny, tmp_path)
    cache = tmp_path / "cache"
    first = _run_ok(capsys, c, c.images, "--cache-dir", cache, "--scoring", "recoverability")
    entries = list(cache.rglob("*.json"))
    assert entries
    for entry in entries:
        entry.write_text("{not json")
    second = _run_ok(capsys, c, c.images, "--cache-dir", cache, "--scoring", "recoverability")
    assert not second["recoverability_cached"]
    errors = [{block: score["error"] for block, score in run["recoverability"].items()} for run in (first, second)]
    assert errors[0] == errors[1]  # recomputed alike (scores also hold latency savings, which are re-measured)


def test_threads_0_means_the_runtime_default(tiny, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "0 or unset: the runtime's default" in " ".join(capsys.readouterr().out.split())
    assert main(["bench", str(tiny[0]), "--threads", "0", "--repeats", "2", "--warmup", "1", "--min-seconds", "0",
                 "--max-timing-seconds", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"]["threads"] == "default"


def test_api_rejects_negative_threads(tiny, tmp_path):
    model, images = tiny
    with pytest.raises(GraphoptError, match="threads must be 0 .*or more"):
        graphopt.accelerate(model, images, tmp_path / "out.onnx", drop=1, threads=-1, quiet=True)
    assert list(tmp_path.iterdir()) == []
