"""The recovery-budget bench drops what a graphopt run dropped, and its table says why each recovery ended."""
from __future__ import annotations

import argparse
import json

import pytest

from graphopt.errors import GraphoptError
from tools.bench import recovery_length as rl


def test_blocks_come_from_a_report_or_the_list(tmp_path):
    report = tmp_path / "run.report.json"
    report.write_text(json.dumps({"dropped": ["_blocks.4", "_blocks.9"]}))
    assert rl.blocks_to_drop(argparse.Namespace(blocks_from=report, blocks="x")) == ["_blocks.4", "_blocks.9"]
    assert rl.blocks_to_drop(argparse.Namespace(blocks_from=None, blocks="a,b")) == ["a", "b"]
    report.write_text(json.dumps({"dropped": []}))
    with pytest.raises(GraphoptError, match="drops no block"):
        rl.blocks_to_drop(argparse.Namespace(blocks_from=report, blocks="x"))


def test_the_table_shows_steps_with_why_they_ended_and_the_int8_row():
    quality = {"top1": 0.8, "top1_interval": [0.78, 0.82], "agreement_top1": 0.9,
               "agreement_top1_interval": [0.88, 0.92]}
    rows = [{"recovery": "up to 1000 steps in 600 s", "blocks": ["_blocks.4"], "steps": 812, "seconds": 600.2,
             "stopped": "time", "held_error_before": 0.34, "held_error_after": 0.32, "quality": quality},
            {"recovery": "onnxruntime quantize_static alone (no block dropped)", "blocks": [], "steps": 0,
             "seconds": 7.0, "stopped": None, "held_error_before": None, "held_error_after": None, "quality": quality}]
    text = rl.markdown({"command": "python -m tools.bench.recovery_length", "original": quality, "rows": rows,
                        "machine": {"generated": "now", "commit": "abc", "cpu": "X"},
                        "settings": {"threads": "1", "lr": "0.0001"}})
    assert "| _blocks.4 | 812 (time) | 600.2 | 0.3400 → 0.3200 | 80.0 (78.0–82.0) |" in text
    assert "| onnxruntime quantize_static alone (no block dropped) | — | 0 | 7.0 | — |" in text


def test_the_rates_table_shows_each_rate_with_its_best_held_out_error():
    from tools.bench import recovery_rates
    rows = [{"lr": 1e-4, "steps": 60, "seconds": 90.0, "held_error_before": 0.21, "held_error_after": 0.21},
            {"lr": 1e-5, "steps": 60, "seconds": 91.0, "held_error_before": 0.21, "held_error_after": 0.2}]
    text = recovery_rates.markdown({"command": "c", "machine": {"generated": "now", "commit": "abc", "cpu": "X"},
                                    "model": "lite2", "blocks": ["_blocks.3"], "rows": rows})
    assert "| 0.0001 | 60 | 90.0 | 0.2100 | 0.2100 |" in text and "| 1e-05 | 60 | 91.0 | 0.2100 | 0.2000 |" in text
