"""The reliability harness: what a hostile or careless user does to graphopt, each case as a test.

Every case ends with exit status 0, 1, 2 or 3, no traceback, the input files as they were, and (on a non-zero exit)
nothing written; the cases a user hit before they were fixed are listed by the group of the report that found them.
Image-decoding limits live in test_calibration_limits.py and exporter defaults in test_exporter_defaults.py.
"""
from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import graphopt.pipeline
from graphopt.cache import ScoreCache
from graphopt.calibration.recovery.recoverability import Recoverability
from graphopt.cli import main
from tests import zoo
from tests.test_bad_inputs import FAST, _snapshot

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def external(tmp_path_factory, tiny):
    """The tiny ResNet saved with its weights in an external-data file: (folder, model path, data path)."""
    folder = tmp_path_factory.mktemp("ext")
    model = onnx.load(str(tiny[0]))
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    return folder, folder / "m.onnx", folder / "m.onnx.data"


@pytest.fixture(scope="module")
def dynamic_hw(tmp_path_factory):
    """The tiny ResNet with dynamic batch, height and width."""
    path = tmp_path_factory.mktemp("dyn") / "dynamic.onnx"
    torch.onnx.export(zoo.tiny_resnet(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}})
    return path


def _accelerate(model: Path, images: Path, out: Path, *args) -> list[str]:
    return [str(a) for a in ["accelerate", model, "--calib", images, "-o", out, "--no-cache", *FAST, "--drop", 1,
                             *args]]


def _fails(capsys, argv: list, pattern: str, *watched: Path) -> str:
    """Run `argv`; require exit 1 with one error line matching `pattern` and every `watched` folder unchanged."""
    before = _snapshot(*watched)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("graphopt: error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert pattern in errors[0], errors[0]
    assert _snapshot(*watched) == before, "an input changed or an output was written"
    return errors[0]


def _no_work(monkeypatch) -> None:
    """Make any run that gets past its up-front checks fail the test: refusals must come before the work."""
    def started(*args, **kwargs):
        raise AssertionError("the run started its work before refusing")
    monkeypatch.setattr(graphopt.pipeline, "prepare", started)


# 1. outputs naming the input's external-data file
@pytest.mark.parametrize("argv", [
    lambda f, m, d, images: ["drop", m, "--blocks", "layer1.0", "-o", d],
    lambda f, m, d, images: _accelerate(m, images, d),
    lambda f, m, d, images: _accelerate(m, images, f / "out.onnx", "--report", d),
], ids=["drop-o", "accelerate-o", "accelerate-report"])
def test_outputs_never_overwrite_the_inputs_external_data(argv, external, tiny, capsys, monkeypatch):
    _no_work(monkeypatch)
    folder, model, data = external
    _fails(capsys, argv(folder, model, data, tiny[1]), "weights file m.onnx.data", folder)


def test_an_output_whose_weights_file_is_the_inputs_is_refused(external, tiny, tmp_path, capsys):
    """-o m2.onnx may write m2.onnx.data beside it; when the input's weights file has that name, it is refused."""
    folder, model, _ = external
    other = tmp_path / "other.onnx"
    onnx.save_model(onnx.load(str(tiny[0])), str(other), save_as_external_data=True, location="out.onnx.data",
                    size_threshold=0)
    _fails(capsys, ["drop", other, "--blocks", "layer1.0", "-o", tmp_path / "out.onnx"], "weights file out.onnx.data",
           tmp_path)


def test_a_hard_link_to_the_input_is_the_input(tiny, tmp_path, capsys):
    link = tmp_path / "link.onnx"
    os.link(tiny[0], link)
    _fails(capsys, ["drop", tiny[0], "--blocks", "layer1.0", "-o", link], "is the input model", tmp_path)


# 2. the model replaced by its report
def test_output_and_report_on_one_file_is_refused(tiny, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    out = tmp_path / "x.onnx"
    _fails(capsys, _accelerate(tiny[0], tiny[1], out, "--report", out), "-o and --report both name", tmp_path)


# 3. hangs: run as a process with a deadline, so a hang fails the test instead of stalling the suite
@pytest.mark.parametrize("args,pattern", [
    (["bench", "{model}", "--min-seconds", "inf"], "--min-seconds must be a finite number of seconds"),
    (["accelerate", "{model}", "--calib", "{images}", "-o", "{out}", "--target-latency", "0.8", "--max-timing-seconds",
      "nan", "--noise-threshold", "0.001"], "--max-timing-seconds must be a finite number of seconds"),
    (["accelerate", "{model}", "--calib", "{images}", "-o", "{out}", "--target-ms", "nan"],
     "--target-ms must be a finite number of milliseconds"),
    (["bench", "{model}", "--repeats", "1000000000000"], "--repeats must be at least 1 and at most"),
], ids=["bench-min-seconds-inf", "max-timing-nan", "target-ms-nan", "repeats-huge"])
def test_options_that_hung_are_refused_at_once(args, pattern, tiny, tmp_path):
    fields = {"model": tiny[0], "images": tiny[1], "out": tmp_path / "out.onnx"}
    argv = [a.format(**fields) for a in args]
    done = subprocess.run([sys.executable, "-m", "graphopt.cli", *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert pattern in done.stderr
    assert list(tmp_path.iterdir()) == []


# 5. late failures that left files behind
@pytest.mark.parametrize("where,pattern", [
    (lambda tmp: Path("/proc/graphopt-report.json"), "cannot write --report /proc/graphopt-report.json"),
    (lambda tmp: tmp / "folder", "it is a folder"),
    (lambda tmp: Path("/dev/null"), "not a regular file"),
], ids=["proc", "existing-folder", "device"])
def test_unwritable_reports_are_refused_before_any_work(where, pattern, tiny, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    (tmp_path / "folder").mkdir()
    _fails(capsys, _accelerate(tiny[0], tiny[1], tmp_path / "out.onnx", "--report", where(tmp_path)), pattern,
           tmp_path)


def test_an_existing_folder_as_output_is_refused_before_any_work(tiny, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    (tmp_path / "out.onnx").mkdir()
    _fails(capsys, _accelerate(tiny[0], tiny[1], tmp_path / "out.onnx"), "it is a folder", tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; /proc covers that case for root")
@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_read_only_output_folders_are_refused_before_any_work(flag, tiny, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        out, report = (locked / "o.onnx", tmp_path / "r.json") if flag == "-o" else (tmp_path / "o.onnx",
                                                                                   locked / "r.json")
        _fails(capsys, _accelerate(tiny[0], tiny[1], out, "--report", report), f"cannot write {flag}", tmp_path)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_sigterm_while_writing_leaves_no_partial_files(tiny, tmp_path, capsys, monkeypatch):
    """SIGTERM arriving half-way through writing the model: exit 143, and neither the output nor a hidden temporary
    folder is left behind."""
    real_save = onnx.save_model

    def save_then_terminate(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(onnx, "save_model", save_then_terminate)
    out = tmp_path / "out.onnx"
    code = main(["drop", str(tiny[0]), "--blocks", "layer1.0", "-o", str(out)])
    assert code == 143 and "stopped by SIGTERM" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is the caller's again


# 6. cache entries of the wrong structure
@pytest.mark.parametrize("entry", [
    lambda ids: {block: 1 for block in ids},
    lambda ids: list(ids),
    lambda ids: {block: {"block": block, "error": "low"} for block in ids},
], ids=["numbers", "list", "strings"])
def test_cache_entries_of_the_wrong_structure_are_recomputed(entry, tiny, tmp_path, capsys, caplog):
    cache, report = tmp_path / "cache", tmp_path / "report.json"
    argv = _accelerate(tiny[0], tiny[1], tmp_path / "out.onnx", "--scoring", "recoverability", "--report", report)
    argv = [a for a in argv if a != "--no-cache"] + ["--cache-dir", str(cache)]
    assert main(argv) == 0, capsys.readouterr().err
    ids = list(json.loads(report.read_text())["recoverability"])
    for path in cache.rglob("*.json"):
        path.write_text(json.dumps(entry(ids)))
    assert main(argv) == 0, capsys.readouterr().err
    assert "damaged cache entry" in caplog.text
    assert not json.loads(report.read_text())["recoverability_cached"]


def test_score_cache_drops_an_invalid_entry(tmp_path):
    cache = ScoreCache(tmp_path)
    cache.put("k", {"layer1.0": {"block": "layer1.0", "error_dropped": 1.0, "error": 0.5, "steps": 3, "seconds": 1}})
    assert cache.get("k", Recoverability.valid_scores)["layer1.0"]["error"] == 0.5
    cache.put("k", {"layer1.0": {"block": "layer1.0", "error_dropped": 1.0, "error": None, "steps": 3, "seconds": 1}})
    assert cache.get("k", Recoverability.valid_scores) is None
    assert not list((tmp_path / "recoverability").glob("*.json"))


# 7. numbers that are not finite or out of range, checked up front
@pytest.mark.parametrize("args,pattern", [
    (["--lr", "-1"], "--lr must be a finite learning rate above 0 up to 1"),
    (["--lr", "nan"], "--lr must be a finite learning rate"),
    (["--lr", "inf"], "--lr must be a finite learning rate"),
    (["--seed", "-3"], "--seed must be 0 or more"),
    (["--holdout", "nan"], "--holdout must be a finite share"),
    (["--time-budget", "inf"], "--time-budget must be a finite number of minutes"),
], ids=lambda v: "_".join(v) if isinstance(v, list) else None)
def test_number_options_are_checked_up_front(args, pattern, tiny, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    _fails(capsys, _accelerate(tiny[0], tiny[1], tmp_path / "out.onnx", *args), pattern, tmp_path, tiny[0].parent)


@pytest.mark.parametrize("args", [["--std", "nan", "nan", "nan", "--mean", "0", "0", "0"],
                                  ["--mean", "inf", "0", "0", "--std", "1", "1", "1"]], ids=["std-nan", "mean-inf"])
def test_normalisation_must_be_finite(args, tiny, tmp_path, capsys):
    _fails(capsys, _accelerate(tiny[0], tiny[1], tmp_path / "out.onnx", *args), "mean and std must be finite numbers",
           tmp_path, tiny[0].parent)


def test_an_image_size_too_large_for_memory_is_refused(dynamic_hw, tiny, tmp_path, capsys):
    _fails(capsys, _accelerate(dynamic_hw, tiny[1], tmp_path / "out.onnx", "--size", "100000"), "GiB, over a quarter",
           tmp_path)


def test_a_calibration_set_too_large_for_memory_at_its_size_is_refused(dynamic_hw, tiny, tmp_path, capsys):
    """A --size at which one image fits (12 bytes a pixel as float, half a quarter of memory) but the twelve stored
    together (3 bytes a pixel each, at 1/0.875 the size) would not."""
    quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    size = int((quarter / 24) ** 0.5)
    _fails(capsys, _accelerate(dynamic_hw, tiny[1], tmp_path / "out.onnx", "--size", size),
           "input 'calibration images' of shape 12x3x", tmp_path)


def test_target_ms_inf_is_refused(tiny, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    argv = _accelerate(tiny[0], tiny[1], tmp_path / "out.onnx")
    drop = argv.index("--drop")
    _fails(capsys, argv[:drop] + argv[drop + 2:] + ["--target-ms", "inf"],
           "--target-ms must be a finite number of milliseconds", tmp_path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_weights_that_are_not_finite_are_named_at_load(value, tiny, tmp_path, capsys):
    model = onnx.load(str(tiny[0]))
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[3] = value
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    line = _fails(capsys, ["blocks", path], f"initializer '{weight.name}' holds 1 value(s) that are NaN or infinite",
                  tmp_path)
    assert "finite weights" in line


def test_an_infinite_mask_that_is_not_a_weight_is_accepted(tmp_path, capsys):
    """-inf in a tensor that is not a weight (attention masks are filled with it) is legitimate."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    mask = onnx.numpy_helper.from_array(np.array([[0, -np.inf, 0, 0]], np.float32), "mask")
    weight = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "mask"], ["masked"]),
                                    onnx.helper.make_node("MatMul", ["masked", "w"], ["y"])], "g", [x], [y],
                                   [mask, weight])
    path = tmp_path / "mask.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    assert main(["blocks", str(path)]) == 0, capsys.readouterr().err


def test_bench_input_shape_too_large_for_memory(dynamic_hw, tmp_path, capsys):
    _fails(capsys, ["bench", dynamic_hw, "--input-shape", "input:1x3x100000x100000"], "GiB, over a quarter", tmp_path)


# 8. dynamic height and width: drop takes --input-shape like the other commands
def test_drop_takes_input_shape_for_a_dynamic_model(dynamic_hw, tmp_path, capsys):
    out = tmp_path / "dropped.onnx"
    _fails(capsys, ["drop", dynamic_hw, "--blocks", "layer1.0", "-o", out], "--input-shape input:", tmp_path)
    assert main(["drop", str(dynamic_hw), "--blocks", "layer1.0", "-o", str(out), "--input-shape",
                 "input:1x3x16x16"]) == 0, capsys.readouterr().err
    dropped = onnx.load(str(out))
    assert len(dropped.graph.node) < len(onnx.load(str(dynamic_hw)).graph.node)
    assert [d.dim_param for d in dropped.graph.input[0].type.tensor_type.shape.dim[2:]] == ["height", "width"]


# 9. report files follow the umask
def test_report_permissions_follow_the_umask(tiny, tmp_path, capsys):
    report = tmp_path / "report.json"
    old = os.umask(0o022)
    try:
        assert main(_accelerate(tiny[0], tiny[1], tmp_path / "out.onnx", "--report", report)) == 0, \
            capsys.readouterr().err
    finally:
        os.umask(old)
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out.onnx").stat().st_mode) == 0o644


# The property: random option values through the whole command line
FLOATS = ["nan", "inf", "-inf", "-1", "0", "-0", "1e-300", "0.001", "0.5", "0.9", "1", "2", "1e308", "abc"]
INTS = ["-1", "0", "1", "2", "3", "1000000000000", "1.5", ""]
OPTIONS = {  # command -> {option: values drawn for it}
    "accelerate": {**{flag: FLOATS for flag in ("--lr", "--holdout", "--time-budget", "--min-seconds", "--std",
                                                "--max-timing-seconds", "--noise-threshold", "--mean")},
                   **{flag: INTS for flag in ("--batch", "--repeats", "--warmup", "--threads", "--seed", "--size",
                                              "--batch-size", "--score-iterations", "--recover-iterations")}},
    "bench": {**{flag: FLOATS for flag in ("--min-seconds", "--max-timing-seconds", "--noise-threshold")},
              **{flag: INTS for flag in ("--batch", "--repeats", "--warmup", "--threads")}},
}
GOALS = {"--target-latency": FLOATS, "--target-ms": FLOATS, "--drop": INTS}
VECTOR_OPTIONS = {"--std", "--mean"}


def _random_command(rng: random.Random, model: Path, images: Path, out: Path) -> list[str]:
    """accelerate (one goal, drawn) or bench, fast settings, then 1-3 number options set to values drawn for them."""
    command = rng.choice(["accelerate", "accelerate", "bench"])
    if command == "accelerate":
        argv = _accelerate(model, images, out)
        goal = rng.choice(list(GOALS))
        argv[argv.index("--drop"):argv.index("--drop") + 2] = [goal, rng.choice(GOALS[goal])]
    else:
        argv = ["bench", str(model), "--repeats", "2", "--warmup", "1", "--min-seconds", "0", "--max-timing-seconds",
                "0"]
    for flag in rng.sample(list(OPTIONS[command]), rng.randint(1, 3)):
        argv += [flag, *([rng.choice(OPTIONS[command][flag])] * (3 if flag in VECTOR_OPTIONS else 1))]
    return argv


def test_random_option_values_never_crash_or_write_on_failure(tiny, tmp_path, capsys):
    """40 seeded command lines with 1-3 number options set to hostile values: exit 0/1/2/3 only, no traceback,
    the inputs unchanged, nothing written unless the exit is 0 (or 3 with its report)."""
    rng = random.Random(20)
    model, images = tiny
    inputs = _snapshot(model.parent)
    seen = set()
    for case in range(40):
        out_dir = tmp_path / f"case{case}"
        out_dir.mkdir()
        argv = _random_command(rng, model, images, out_dir / "out.onnx")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        err = capsys.readouterr().err
        seen.add(code)
        assert code in (0, 1, 2, 3) and "Traceback" not in err, (argv, code, err)
        if code == 1:
            assert sum(line.startswith("graphopt: error: ") for line in err.splitlines()) == 1, (argv, err)
        if code != 0:
            assert list(out_dir.iterdir()) == [], (argv, code, err)
        assert _snapshot(model.parent) == inputs, argv
    assert {0, 1, 2} <= seen, seen  # the sample reached runs that work, refusals and usage errors
