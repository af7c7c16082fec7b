"""The block-latency benchmark's structure on a tiny real model; timing values are the benchmark's business."""
import json

from graphopt.runtime import TimingSettings, get_backend
from tools.bench.blocks import bench_architecture, export_torchvision, main, spread_subset


def test_bench_architecture_structure(tmp_path):
    model = export_torchvision("resnet18", 32, tmp_path)
    backend = get_backend("onnxruntime", TimingSettings(batch=1, warmup=0, repeats=2, max_seconds=1), threads=1)
    result = bench_architecture(model, backend, max_blocks=3)
    assert (result["blocks"], result["droppable"]) == (8, 5)
    assert result["measured"] == ["layer1.0", "layer2.1", "layer4.1"]
    assert [r["id"] for r in result["per_block"]] == result["measured"]
    assert {"macs_share", "params", "saving", "saving_p10", "base", "dropped"} <= set(result["per_block"][0])
    assert result["correlation"] is None  # ResNet-18's basic blocks all hold the same share of MACs
    assert result["combined"]["ids"] == ["layer1.0", "layer4.1"]
    assert abs(result["combined"]["predicted_ratio_macs"] - (1 - 2 * result["per_block"][0]["macs_share"])) < 1e-9
    assert {"median_ms", "p10_ms", "p90_ms", "runs"} <= set(result["base"])


def test_main_writes_markdown_and_json(tmp_path):
    out = tmp_path / "latency.md"
    assert main(["--models", "resnet18", "--size", "32", "--warmup", "0", "--repeats", "2", "--threads", "1",
                 "--min-seconds", "0", "--max-blocks", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Block latency") and f"--out {out}" in text and "## resnet18" in text
    assert "Measured 2 of 5 droppable blocks" in text and "## Summary: combined drop" in text
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["machine"]["threads"] == 1 and set(payload["results"]) == {"resnet18"}


def test_spread_subset_keeps_ends():
    assert spread_subset(list("abcdefg"), 3) == ["a", "d", "g"]
    assert spread_subset(list("ab"), 3) == ["a", "b"]
