"""tools/bench/recovery_speed.py on the tiny ResNet: the student it times is the one recovery trains (starting at
the first dropped block, not the input), a step is timed, and the report renders every figure."""
from __future__ import annotations

import onnx
import torch

from graphopt.calibration.bridge.teacher import Teacher
from graphopt.features import feature_tensors
from tools.bench import recovery_speed as rs


def test_the_timed_student_starts_at_the_first_dropped_block(tiny):
    model = onnx.load(str(tiny[0]))
    dropped = rs.chosen_blocks(model, 2)
    assert len(dropped) == 2
    student, params, pruned = rs.student_of(model, dropped)
    assert student.cut != "input" and params
    assert all(p.requires_grad for p in params)
    frozen = [p for p in student.graph.module.parameters() if not any(p is q for q in params)]
    assert all(not p.requires_grad for p in frozen)
    features = feature_tensors(model)
    values = Teacher(model, [student.cut, *features])(torch.randn(4, 3, 16, 16))
    seconds = rs.time_steps(student.forward, params, values[student.cut], [values[f] for f in features], steps=2)
    assert 0 < seconds < 60
    rows = rs.profile_step(student.forward, params, values[student.cut], [values[f] for f in features], rows=3)
    assert len(rows) == 3 and all(0 <= r["share"] <= 1 for r in rows)


def test_the_report_shows_each_model_against_native_and_floor():
    row = {"model": "lite0", "size": 224, "dropped": ["_blocks.4"], "cut": "c", "batch": 16, "steps": 5,
           "trainable_parameters": 1000, "graphopt_step_s": 0.4, "native_step_s": 0.5, "forward_macs": 5e9,
           "matmul_macs_per_s": 5e10, "floor_step_s": 0.3,
           "overheads_per_step_s": {"augmentation": 0.01, "teacher": 0.2, "held-out evaluation": 0.02,
                                    "view_epochs": 4, "train_images": 80, "held_images": 20},
           "profile": [{"op": "aten::convolution_backward", "share": 0.6, "calls_per_step": 28, "ms_per_step": 240}]}
    text = rs.markdown({"command": "python -m tools.bench.recovery_speed", "machine": {"cpu": "X"},
                        "versions": {"torch": "2"}, "settings": {"steps": 5, "threads": 1, "note": "quiet"},
                        "models": [row]})
    assert "| 0.400 (2.50) | 0.500 | 0.300 | 0.80x | 1.3x |" in text
    assert "teacher pass 0.200 s" in text and "A step with what surrounds it: 0.630 s" in text
    assert "1,000 steps take 10.5 minutes" in text and "`aten::convolution_backward` | 60.0%" in text
