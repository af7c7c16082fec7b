"""Benchmark loaders and evaluators on a few real images; skipped with the reason when the data is not installed."""
from __future__ import annotations

import gzip
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from graphopt.errors import GraphoptError
from graphopt.model_io import load_model
from tools import fmnist
from tools.bench.common import BenchDataMissing, predict

HAS_FMNIST = all((fmnist.DATA_DIR / name).is_file() for pair in fmnist.FILES.values() for name in pair)
needs_fmnist = pytest.mark.skipif(not HAS_FMNIST, reason="Debian package dataset-fashion-mnist is not installed "
                                                         "(bash tools/install_bench_data.sh)")


def _photos_available() -> bool:
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        return False
    from tools import effnet_lite
    try:
        effnet_lite.photo_sources()
    except BenchDataMissing:
        return False
    return True


needs_photos = pytest.mark.skipif(not _photos_available(), reason="bench extra or Debian photo packages missing "
                                                                   "(bash tools/install_bench_data.sh)")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """An untrained ResNet-20 exported the way the real teacher is: the evaluator must not care about accuracy."""
    torch.manual_seed(0)
    model = fmnist.ResNetCifar([4, 8, 16], 1, stem_stride=2).eval()
    path = tmp_path_factory.mktemp("teacher") / "tiny.onnx"
    fmnist.export_onnx(model, path)
    return model, path


# --------------------------------------------------------------------------- Fashion-MNIST

@needs_fmnist
def test_idx_splits_have_the_documented_sizes_and_balanced_test_labels():
    train_x, train_y = fmnist.load_split("train")
    test_x, test_y = fmnist.load_split("test")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    assert np.bincount(test_y).tolist() == [1000] * 10
    assert set(np.unique(train_y)) == set(range(10))


def test_missing_idx_file_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(fmnist, "DATA_DIR", tmp_path)
    with pytest.raises(BenchDataMissing, match="dataset-fashion-mnist"):
        fmnist.load_split("test")


def test_corrupt_idx_file_is_a_one_line_error(monkeypatch, tmp_path):
    for name in fmnist.FILES["test"]:
        with gzip.open(tmp_path / name, "wb") as fh:
            fh.write(b"not an idx file")
    monkeypatch.setattr(fmnist, "DATA_DIR", tmp_path)
    with pytest.raises(GraphoptError, match="not an unsigned-byte IDX"):
        fmnist.load_split("test")


@needs_fmnist
def test_calibration_folder_holds_the_sampled_training_images(tmp_path):
    folder = fmnist.sample_calibration(10, seed=3, root=tmp_path)
    manifest = json.loads(folder.with_suffix(".json").read_text())
    images, labels = fmnist.load_split("train")
    files = sorted(folder.iterdir())
    assert len(files) == 10 and len(set(manifest["indices"])) == 10
    for path, index in zip(files, manifest["indices"]):
        assert np.array_equal(np.asarray(Image.open(path)), images[index])
    assert manifest["labels"] == labels[manifest["indices"]].tolist()
    again = fmnist.sample_calibration(10, seed=3, root=tmp_path / "again")
    other = fmnist.sample_calibration(10, seed=4, root=tmp_path)
    assert json.loads(again.with_suffix(".json").read_text())["indices"] == manifest["indices"]
    assert json.loads(other.with_suffix(".json").read_text())["indices"] != manifest["indices"]


@needs_fmnist
def test_onnx_evaluator_matches_pytorch_on_test_images(tiny_teacher):
    model, path = tiny_teacher
    images, labels = fmnist.load_split("test")
    expected = fmnist._accuracy_torch(model, images[:300], labels[:300])
    assert fmnist.evaluate(path, limit=300) == pytest.approx(expected)


def test_predict_feeds_fixed_batch_models_in_padded_chunks(tiny_teacher):
    _, path = tiny_teacher
    inputs = np.random.default_rng(0).random((10, 1, 28, 28), dtype=np.float32)
    fixed = load_model(path)
    for value in (fixed.graph.input[0], fixed.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    np.testing.assert_allclose(predict(fixed, inputs), predict(path, inputs, batch=3), atol=1e-5)


# --------------------------------------------------------------------------- EfficientNet-Lite0

@needs_photos
def test_photos_split_by_photo_and_both_sides_cover_every_source():
    from tools import effnet_lite
    calib, evaluation = effnet_lite.split_photos()
    assert not set(calib) & set(evaluation)
    assert (calib, evaluation) == effnet_lite.split_photos()
    for paths in effnet_lite.photo_sources().values():
        if len(paths) > 1:
            assert set(paths) & set(calib) and set(paths) & set(evaluation)


@needs_photos
def test_calibration_crops_come_only_from_calibration_photos(tmp_path):
    from tools import effnet_lite
    folder = effnet_lite.write_calibration(6, seed=0, root=tmp_path)
    calib, evaluation = effnet_lite.split_photos()
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 6
    stems = {p.name.split("_", 1)[1].rsplit(".", 1)[0] for p in files}
    assert stems <= {p.stem for p in calib} and not stems & {p.stem for p in evaluation}
    assert all(min(Image.open(p).size) >= 64 for p in files)


@needs_photos
def test_preprocessing_follows_the_protocol():
    from tools import effnet_lite
    image = Image.fromarray(np.full((300, 500, 3), 255, dtype=np.uint8))
    out = effnet_lite.preprocess(image)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    assert np.allclose(out, (255 - 127) / 128)


@needs_photos
def test_lite0_agrees_with_itself_and_less_without_blocks():
    from graphopt.passes import drop_blocks
    from tools import effnet_lite
    path = effnet_lite.lite0_path()
    check = json.loads(path.with_suffix(".json").read_text())["check"]
    assert check["top1_same"] == 1.0 and check["max_abs_diff"] < 1e-3
    views = len(effnet_lite.split_photos()[1])
    assert effnet_lite.agreement(path, crops_per_photo=0) == {"top1": 1.0, "top5": 1.0, "views": views}
    damaged = drop_blocks(load_model(path), ["_blocks.2", "_blocks.4", "_blocks.9", "_blocks.12"])
    result = effnet_lite.agreement(damaged, crops_per_photo=0)
    assert result["top1"] < 1.0 and result["top5"] >= result["top1"]


# --------------------------------------------------------------------------- baselines

@pytest.fixture(scope="module")
def two_per_stage(tmp_path_factory):
    """ResNet with two blocks per stage whose layer1.1 branch is silenced (its last BatchNorm outputs zeros)."""
    torch.manual_seed(1)
    model = fmnist.ResNetCifar([4, 8, 16], 2, stem_stride=2)
    with torch.no_grad():
        model.layer1[1].bn2.weight.zero_()
        model.layer1[1].bn2.bias.zero_()
    path = tmp_path_factory.mktemp("r14") / "r14.onnx"
    fmnist.export_onnx(model.eval(), path)
    return load_model(path)


def test_proxy_ranks_a_silent_branch_first_and_last_per_stage_takes_each_stage_end(two_per_stage):
    from graphopt.blocks import find_blocks
    from tools.bench import baselines
    blocks = find_blocks(two_per_stage)
    ratios = baselines.residual_ratios(two_per_stage, blocks)
    assert ratios["layer1.1"] < 1e-6 < min(v for k, v in ratios.items() if k != "layer1.1")
    choices = baselines.baseline_choices(two_per_stage, blocks, ks=[1, 2], seeds=[0, 1])
    by_method = {}
    for choice in choices:
        by_method.setdefault(choice["method"], []).append(choice)
    assert [c["dropped"] for c in by_method["last-per-stage"]] == [["layer1.1", "layer2.1", "layer3.1"]]
    assert by_method["proxy"][0]["dropped"] == ["layer1.1"]
    assert [c["k"] for c in by_method["random"]] == [1, 1, 2, 2]
    assert choices == baselines.baseline_choices(two_per_stage, blocks, ks=[1, 2], seeds=[0, 1])


@needs_fmnist
def test_rows_pair_each_model_with_its_quality_and_an_original_repeat(two_per_stage):
    from graphopt.runtime import TimingSettings
    from tools.bench import baselines
    bench = baselines.Bench("t", "tiny", model_path=None, model_record=dict,
                            quality=lambda m: {"top1": fmnist.evaluate(m, limit=200)}, metric="top-1",
                            timing=TimingSettings(batch=1, warmup=1, repeats=3, max_seconds=1), calib_folder=None, calib_sizes=(),
                            preprocessing={})
    variants = baselines.baseline_variants(two_per_stage, ks=[1], seeds=[0])
    rows = baselines.measure_rows(bench, two_per_stage, variants, log=lambda _: None)
    assert [r.method for r in rows] == ["original", "random", "last-per-stage", "proxy", "original-repeat"]
    assert rows[0].latency_ratio == 1.0 and rows[-1].quality == rows[0].quality
    silent = fmnist.evaluate(variants[-1][1], limit=200)  # proxy k=1 drops only the silent layer1.1
    assert variants[-1][0]["dropped"] == ["layer1.1"] and rows[3].quality["top1"] == silent == rows[0].quality["top1"]


def test_results_page_carries_every_methods_study_summary(tmp_path):
    from tools.make_results import studies_markdown
    summary = [{"method": "blocks", "runs": 3, "quality_mean": 0.9, "quality_min": 0.89, "quality_max": 0.91,
                "ratio_mean": 0.64, "ratio_min": 0.6, "ratio_max": 0.7}]
    studies = tmp_path / "studies"  # docs/studies/ beside docs/results.md
    studies.mkdir()
    (studies / "methods_x.json").write_text(json.dumps({"summary": summary, "unreachable": [
        {"method": "basis", "seed": 0, "why": "every cut at once measures 0.994"}]}))
    (studies / "methods_x.md").write_text("# Methods at target 0.7: X\n\nMade by `cmd`, today.\n")
    (studies / "methods_y.json").write_text(json.dumps({"rows": []}))  # no summary: not a methods study
    lines = studies_markdown(studies, tmp_path)
    assert "## Methods at target 0.7: X (methods_x)" in lines
    assert "Made by `cmd`, today. Every run: [methods_x.md](studies/methods_x.md)." in lines
    assert "| blocks | 3 | 0.9000 (0.8900–0.9100) | 0.640 (0.600–0.700) |" in lines
    assert any("basis (seed 0): every cut at once measures 0.994" in line for line in lines)
    assert not any("methods_y" in line for line in lines)


def test_scoring_study_picks_each_measures_best_eligible_plan_and_ranks_against_quality():
    from tools.bench.scoring import summarise
    rows = [{"dropped": ["a"], "macs_share": 0.1, "kl_held": 0.1, "kl_all": 0.1, "feature_held": 0.3, "quality": 0.9},
            {"dropped": ["b", "c"], "macs_share": 0.2, "kl_held": 0.3, "kl_all": 0.4, "feature_held": 0.1,
             "quality": 0.7},
            {"dropped": ["a", "c"], "macs_share": 0.2, "kl_held": 0.2, "kl_all": 0.2, "feature_held": 0.2,
             "quality": 0.8}]
    summary = {s["measure"]: s for s in summarise(rows, min_macs=0.15)}
    # kl_held orders the plans exactly as quality does; feature_held exactly the other way
    assert summary["kl_held"]["spearman"] == pytest.approx(1.0)
    assert summary["feature_held"]["spearman"] == pytest.approx(-1.0)
    # the single-block plan is not eligible (too small a cut), so each measure picks among the other two
    assert summary["kl_held"]["picks"] == ["a", "c"] and summary["feature_held"]["picks"] == ["b", "c"]
    assert summary["oracle (quality itself)"]["picks"] == ["a", "c"]
    assert summary["oracle (quality itself)"]["picked_quality"] == 0.8


def test_ceiling_search_reaches_the_target_with_the_cuts_that_lose_least_quality(tiny):
    """The oracle search on the tiny ResNet with a simulated backend: the plan it returns is predicted to reach the
    target, its quality is the quality function's figure for that plan, and its first cut is the one losing least
    per millisecond alone."""
    import time
    from graphopt.selection import latency_table, predicted_ratio
    from graphopt.settings import AccelerateSettings
    from graphopt.stages.prepare import prepare
    from tests.fake_latency import SimulatedBackend
    from tests.helpers import run_onnx
    from tools.bench.ceiling import search
    path, images = tiny
    settings = AccelerateSettings(methods=["blocks", "filters"], importance="l1", threads=1, target_latency=0.8)
    run = prepare(str(path), None, str(images), settings, SimulatedBackend(), True, time.monotonic() + 600)
    x = run.calibration.tensors().numpy()
    reference = run_onnx(run.original, x).argmax(1)

    class Bench:
        @staticmethod
        def quality(model):
            return {"top1": float((run_onnx(model, x).argmax(1) == reference).mean())}

    table = latency_table(run.backend, run.planner, run.actions, quiet=True)
    result = search(Bench, run, table, 0.8, ["blocks"])
    assert result["plan"] and all(not cut.count("@") for cut in result["plan"])
    plan = [a for a in run.actions if a.id in result["plan"]]
    assert predicted_ratio(plan, table) <= 0.8 or len(plan) == len(run.droppable)
    assert result["quality"] == Bench.quality(run.planner.apply(plan))["top1"]
    first = result["single_cuts"][0]
    assert first["cut"] in {b.id for b in run.droppable}
    assert all((1 - first["quality"]) / first["saved_ms"] <= (1 - c["quality"]) / max(c["saved_ms"], 1e-3)
               for c in result["single_cuts"])


def test_results_page_shows_the_labelled_imagenet_sections_first(tmp_path):
    """docs/results.md carries the model sections of results_imagenet.md (headings one level down), with the command
    that made them; without that page there is no such section."""
    from tools.make_results import imagenet_markdown
    assert imagenet_markdown(tmp_path) == []
    (tmp_path / "results_imagenet.md").write_text(
        "# Labelled ImageNet results\n\nRegenerate with `python -m tools.bench.imagenet --models lite0`\n\n"
        "Machine: x.\n\n## EfficientNet-Lite0 (224 px)\n\n| method | top-1 |\n|---|---|\n| original | 82.5 |\n")
    lines = imagenet_markdown(tmp_path)
    assert lines[0] == "## Labelled ImageNet photos (the main yardstick)"
    assert "### EfficientNet-Lite0 (224 px)" in lines and "| original | 82.5 |" in lines
    assert "`python -m tools.bench.imagenet --models lite0`" in lines[2] and "Machine: x." not in lines
