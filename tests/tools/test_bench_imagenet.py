"""tools/bench/imagenet.py's pure parts on tiny fake inputs: INT8 targets from INT8 alone's ratio, the accelerate
jobs, rows from a report (and from a run that missed its target), and the Markdown. No model is run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graphopt.errors import GraphoptError
from tools.bench import imagenet as bi

REPO = Path(__file__).resolve().parents[2]


def _run(exit_code: int, report: dict | None, wall: float = 61.0) -> dict:
    command = [sys.executable, "-m", "graphopt", "accelerate", "m.onnx", "--target-latency", "0.8"]
    return {"command": command[1:], "exit_code": exit_code, "wall_s": wall, "report": report,
            "log_tail": ["graphopt: error: last line"]}


OK_REPORT = {"status": "ok", "dropped": ["blocks.3", "blocks.7"], "pruned": {"g1": 48}, "split": {},
             "latency": {"ratio": 0.78}, "agreement_top1": 0.95, "seconds": {"recover": 300.0}}
MISSED_REPORT = {"status": "target not met", "exit_code": 3,
                 "error": "latency target 0.300 not met: measured 0.412 ± 0.004"}


def _quality(top1: float) -> dict:
    return {"images": 100, "top1": top1, "top1_interval": [top1 - 0.05, top1 + 0.04], "top5": 0.95,
            "top5_interval": [0.9, 0.98], "agreement_top1": 0.9, "agreement_top1_interval": [0.83, 0.94]}


def _row(method: str, ratio: float | None, top1: float = 0.8, **fields) -> dict:
    row = {"bench": "lite0", "method": method, "dropped": [], "k": 0, "seed": None, "recovery": "none",
           "calibration": None, "wall_s": None, "extra": {}, "quality": _quality(top1),
           "latency": {"median_ms": 10.0, "p10_ms": 9.5, "p90_ms": 10.8, "runs": 100, "batch": 1},
           "latency_ratio": ratio, "ratio_p10": None if ratio is None else ratio - 0.02,
           "ratio_p90": None if ratio is None else ratio + 0.03}
    return {**row, **fields}


def test_int8_targets_are_multiples_of_int8_alones_ratio_rounded():
    assert bi.int8_targets(0.5123, [1.0, 0.85, 0.7]) == [0.512, 0.435, 0.359]


def test_int8_targets_outside_zero_one_are_refused():
    with pytest.raises(GraphoptError, match="not in"):
        bi.int8_targets(0.9, [1.2])


def test_jobs_cover_each_target_and_one_500_image_row_at_the_middle_fp32_target():
    jobs = bi.plan_jobs([0.9, 0.7, 0.8], [0.5, 0.42], [1.0, 0.85], 100, 500)
    assert [(j.precision, j.target, j.calib, j.factor) for j in jobs] == [
        ("default", None, 100, None), ("fp32", 0.9, 100, None), ("fp32", 0.7, 100, None), ("fp32", 0.8, 100, None),
        ("int8", 0.5, 100, 1.0), ("int8", 0.42, 100, 0.85), ("fp32", 0.8, 500, None)]
    assert len({j.tag for j in jobs}) == len(jobs)
    assert bi.plan_jobs([0.9], [], [], 100, None) == [bi.Job("default", None, 100), bi.Job("fp32", 0.9, 100)]


def test_accelerate_command_is_the_users_command_with_int8_and_budget_when_asked():
    job = bi.Job("int8", 0.4, 100, 0.8)
    command = bi.accelerate_command(Path("m.onnx"), Path("calib-100"), Path("o.onnx"), Path("r.json"), job, 1, 2.5)
    text = " ".join(command[1:])
    assert text.startswith("-m graphopt accelerate m.onnx --calib calib-100 -o o.onnx --norm tf --resize crop "
                           "--threads 1 --report r.json --quiet --target-latency 0.4")
    assert "--precision int8" in text and text.endswith("--time-budget 2.5")
    fp32 = bi.accelerate_command(Path("m.onnx"), Path("c"), Path("o"), Path("r"), bi.Job("fp32", 0.8, 100), 1, None)
    assert "--precision" not in fp32 and "--time-budget" not in fp32
    default = bi.accelerate_command(Path("m.onnx"), Path("c"), Path("o"), Path("r"), bi.Job("default", None, 100),
                                    1, None)
    assert "--target-latency" not in default and "--precision" not in default
    assert bi.Job("default", None, 100).tag == "default-c100"


def test_row_fields_from_a_successful_report():
    fields = bi.accelerate_fields(bi.Job("int8", 0.4, 100, 0.8), _run(0, OK_REPORT))
    assert fields["method"] == "graphopt int8" and fields["dropped"] == ["blocks.3", "blocks.7"]
    assert fields["k"] == 2 and fields["wall_s"] == 61.0
    assert fields["calibration"] == "100 images (ILSVRC2012 val)"
    assert fields["recovery"] == "feature mimicking + INT8 recovery"
    extra = fields["extra"]
    assert extra["status"] == "ok" and extra["target_latency"] == 0.4 and extra["int8_factor"] == 0.8
    assert extra["own_latency_ratio"] == 0.78 and extra["held_out_agreement"] == 0.95
    assert extra["pruned"] == {"g1": 48} and "error" not in extra
    assert extra["command"] == "graphopt accelerate m.onnx --target-latency 0.8"


def test_a_run_that_missed_its_target_is_a_row_with_graphopts_figures_and_no_measurement():
    fields = bi.accelerate_fields(bi.Job("fp32", 0.3, 500), _run(3, MISSED_REPORT))
    assert fields["extra"]["status"] == "target not met"
    assert "measured 0.412" in fields["extra"]["error"]
    assert fields["calibration"] == "500 images (imagenette train, 10 classes)"
    row = bi.unmeasured_row("lite0", fields)
    assert row["quality"] is None and row["latency_ratio"] is None and row["method"] == "graphopt fp32"
    crashed = bi.accelerate_fields(bi.Job("fp32", 0.8, 100), _run(1, None))
    assert crashed["extra"]["status"] == "error (exit 1)"
    assert crashed["extra"]["error"] == "graphopt: error: last line" and crashed["dropped"] == []


def _results(limit: int | None = None) -> dict:
    fp32 = _row("graphopt fp32", 0.79, 0.78, dropped=["b1"], k=1, calibration="100 images (ILSVRC2012 val)",
                wall_s=612.0, extra={"target_latency": 0.8, "int8_factor": None, "status": "ok", "pruned": {"g": 8}})
    fp32_500 = _row("graphopt fp32", 0.8, 0.79, calibration="500 images (imagenette train, 10 classes)",
                    dropped=["b1"], k=1, wall_s=700.0,
                    extra={"target_latency": 0.8, "int8_factor": None, "status": "ok"})
    missed = bi.unmeasured_row("lite0", bi.accelerate_fields(bi.Job("int8", 0.35, 100, 0.7),
                                                             _run(3, MISSED_REPORT, 400.0)))
    rows = [_row("original", 1.0, 0.825), _row("ort quantize_static", 0.5, 0.82, wall_s=9.0,
                                               calibration="100 images (ILSVRC2012 val)"),
            fp32_500, fp32, missed, _row("original-repeat", 1.004, 0.825)]
    model = {"title": "EfficientNet-Lite0 (224 px)", "rows": rows, "int8_alone_ratio_for_targets": 0.5,
             "model": {"params": 4652008, "check": {"images": 16, "max_abs_diff": 3e-5, "top1_same": 1.0},
                       "input": {"crop": 224, "resize_short_side": 256}},
             "runtime": {"repeats": 100, "warmup": 10}, "load_average": {"before": [0.1, 0, 0], "after": [1.0, 0, 0]}}
    return {"command": "python -m tools.bench.imagenet --models lite0",
            "machine": {"cpu": "Fake CPU", "logical_cpus": 2, "runtime": "onnxruntime 1.0 (CPUExecutionProvider)",
                        "python": "3.12", "onnx": "1", "torch": "2", "os": "Linux", "commit": "abc1234",
                        "generated": "2026-01-01 00:00 UTC"},
            "settings": {"threads": 1, "time_budget": None, "eval_limit": limit, "data": "/data", "calib": 100},
            "data": {"seed": 0, "eval_images": 1200, "scored": limit or 1200}, "models": {"lite0": model}}


def test_markdown_starts_with_the_command_and_states_the_conditions():
    text = bi.markdown(_results(), "r.png")
    head = text.splitlines()[:8]
    assert any(line == "Regenerate with `python -m tools.bench.imagenet --models lite0`" for line in head)
    assert "commit abc1234" in text and "Fake CPU" in text and "1 intra-op thread(s), no spinning" in text
    assert "**Timed with nothing else running on the machine.**" in text
    assert "smoke run" not in text and "![latency vs top-1](r.png)" in text
    assert "smoke run" in bi.markdown(_results(limit=100), "r.png")


def test_markdown_table_orders_rows_and_shows_intervals_ratios_and_the_missed_target():
    lines = [line for line in bi.markdown(_results(), "r.png").splitlines() if line.startswith("| ")]
    methods = [line.split(" | ")[0].lstrip("| ") for line in lines[1:]]
    assert methods == ["original", "ort quantize_static", "graphopt fp32", "graphopt fp32", "graphopt int8",
                       "original-repeat"]
    assert "100 images" in lines[3] and "500 images" in lines[4]  # main calibration set first
    fp32 = lines[3].split(" | ")
    assert fp32[1] == "0.800" and fp32[3] == "ok" and fp32[4] == "78.0 (73.0–82.0)"
    assert fp32[7] == "0.790 (0.770–0.820)" and fp32[8] == "1 block(s) + 1 group(s) pruned" and fp32[9] == "612 |"
    missed = lines[5].split(" | ")
    assert missed[1] == "0.350 (0.7 × INT8 alone)" and missed[3] == "target not met" and missed[4] == "—"
    assert missed[7] == "—" and missed[9] == "400 |"
    assert "measured 0.412 ± 0.004" in bi.markdown(_results(), "r.png")
    assert lines[2].split(" | ")[8] == "INT8"


def test_plot_labels_separate_the_500_image_row():
    rows = _results()["models"]["lite0"]["rows"]
    assert [bi.plot_label(r, 100) for r in rows[:3]] == ["original", "ort quantize_static", "graphopt fp32, 500 images"]


def test_plot_is_written_with_every_measured_row(tmp_path):
    pytest.importorskip("matplotlib")
    results = _results()
    default = _row("graphopt default", 0.5, 0.82, calibration="100 images (ILSVRC2012 val)", wall_s=40.0,
                   extra={"target_latency": None, "int8_factor": None, "status": "ok"})
    results["models"]["lite0"]["rows"].insert(2, default)  # no target: labelled "no goal"
    bi.write_plot(results, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_eval_limit_links_the_first_images_with_their_labels(tmp_path):
    data = tmp_path / "data"
    (data / "eval" / "images").mkdir(parents=True)
    for name in ("a.JPEG", "b.JPEG", "c.JPEG"):
        (data / "eval" / "images" / name).write_bytes(b"x")
    (data / "eval" / "labels.txt").write_text("c.JPEG 3\na.JPEG 1\nb.JPEG 2\n")
    full = bi.eval_set(data, None, tmp_path / "work")
    assert full.count == 3 and full.images == data / "eval" / "images"
    subset = bi.eval_set(data, 2, tmp_path / "work")
    assert subset.count == 2 and sorted(p.name for p in subset.images.iterdir()) == ["a.JPEG", "c.JPEG"]
    assert subset.labels.read_text() == "c.JPEG 3\na.JPEG 1\n"
    assert bi.eval_set(data, 2, tmp_path / "work").count == 2  # a second smoke run replaces the links
    with pytest.raises(GraphoptError, match="not found"):
        bi.eval_set(tmp_path / "nowhere", None, tmp_path / "work")


FAKE_ACCELERATE = """
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
Path(sys.argv[2]).write_text(json.dumps({"status": "target not met", "error": "measured 0.95"}))
sys.exit(3)
"""


def test_run_accelerate_records_exit_status_and_report_and_reuses_only_the_same_command(tmp_path):
    counter, report, output = tmp_path / "runs", tmp_path / "r.report.json", tmp_path / "o.onnx"
    command = [sys.executable, "-c", FAKE_ACCELERATE, str(counter), str(report)]
    run = bi.run_accelerate(command, output, report, reuse=True)
    assert run["exit_code"] == 3 and run["report"]["error"] == "measured 0.95" and run["wall_s"] >= 0
    assert bi.status_of(run) == "target not met"
    again = bi.run_accelerate(command, output, report, reuse=True)
    assert again["reused"] and again["exit_code"] == 3 and counter.read_text() == "x"
    bi.run_accelerate(command, output, report, reuse=False)
    bi.run_accelerate([*command, "--changed"], output, report, reuse=True)
    assert counter.read_text() == "xxx"


def test_help_works():
    out = subprocess.run([sys.executable, "-m", "tools.bench.imagenet", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--int8-factors" in out.stdout and "--eval-limit" in out.stdout


def test_the_results_page_carries_the_imagenet_pages_bold_notes(tmp_path):
    from tools.make_results import IMAGENET_PAGE, imagenet_markdown
    (tmp_path / IMAGENET_PAGE).write_text("# title\n\nRegenerate with `x`\n\nplain words\n\n**Not quiet.** load\non "
                                          "two lines\n\nmore plain\n\n## Lite0\n\n| table |\n")
    lines = imagenet_markdown(tmp_path)
    assert "**Not quiet.** load" in lines and "on two lines" in lines and "plain words" not in lines
    assert lines.index("on two lines") < lines.index("### Lite0")
