"""graphopt.evaluate: labelled accuracy and agreement on tiny real ONNX classifiers and real image files.

The classifier is a convolution whose 10 filters are the (normalised) patterns of 10 "template" images, so an image
of template k is classified k with a wide margin and the expected top-1 of a labelled folder is known exactly. Every
figure is also recomputed independently here: the folder loaded by the calibration loader, run on onnxruntime.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from graphopt.calibration.data.dataset import load_calibration
from graphopt.cli import main
from graphopt.errors import GraphoptError
from graphopt.evaluate import evaluate, format_table, wilson

SIZE, STORED, CLASSES = 16, 18, 10  # stored: round(16 / 0.875), the size "crop" preprocessing resizes to
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
WNIDS = [f"n{1440764 + 9973 * k:08d}" for k in range(CLASSES)]  # ascending: sorted order is the class index
# 40 images, 4 of each template; every 4th is filed under the wrong class, so top-1 is exactly 30/40
ITEMS = [(i % CLASSES, i % CLASSES if i % 4 else (i + 3) % CLASSES) for i in range(40)]


def _templates(count: int = CLASSES) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (count, STORED, STORED, 3), dtype=np.uint8)


def _export(weight: np.ndarray, path, batch: int | None = None) -> str:
    size = weight.shape[-1]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, len(weight), size, bias=False), torch.nn.Flatten()).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(weight))
    axes = None if batch else {"input": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(batch or 2, 3, size, size), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes)
    return str(path)


def _template_weight(count: int = CLASSES) -> np.ndarray:
    """Each filter is template k's centre crop as the model sees it (ImageNet normalisation), of unit norm."""
    lo = (STORED - SIZE) // 2
    crops = _templates(count)[:, lo:lo + SIZE, lo:lo + SIZE].astype(np.float64) / 255
    x = ((crops - MEAN) / STD).transpose(0, 3, 1, 2).reshape(count, -1)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).reshape(count, 3, SIZE, SIZE).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_models")
    weight = _template_weight()
    perturbed = weight[[1, 0, *range(2, CLASSES)]] + 0.001 * np.random.default_rng(1).standard_normal(weight.shape)
    return {"base": _export(weight, root / "base.onnx"),
            "perturbed": _export(perturbed.astype(np.float32), root / "perturbed.onnx"),
            "fixed": _export(weight, root / "fixed.onnx", batch=4),
            "eight": _export(_template_weight(8), root / "eight.onnx"),
            "four": _export(_template_weight(4), root / "four.onnx"),
            "small": _export(np.random.default_rng(2).standard_normal((CLASSES, 3, 12, 12)).astype(np.float32),
                             root / "small.onnx")}


def _write(folder, items, layout: str = "flat", names: list[str] | None = None) -> dict[str, int]:
    """Image files of template t labelled l for each (t, l); layout flat, wnid or index. Returns {path: label}."""
    templates, labels = _templates(), {}
    for i, (template, label) in enumerate(items):
        sub = {"flat": "", "wnid": (names or WNIDS)[label] + "/", "index": f"{label}/"}[layout]
        name = f"{sub}img{i:02d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(templates[template]).save(folder / name)
        labels[name] = label
    return labels


def _expected(model: str, folder, labels: dict[str, int] | None, reference: str | None = None) -> dict:
    """Top-1, top-5 and agreement computed without graphopt.evaluate: calibration loader + onnxruntime."""
    def scores(path: str) -> tuple[tuple[str, ...], np.ndarray]:
        data = load_calibration(folder, path)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return data.files, session.run(None, {"input": data.tensors().numpy()})[0]

    files, logits = scores(model)
    reference_logits = scores(reference or model)[1]
    result = {"agree": float((logits.argmax(1) == reference_logits.argmax(1)).mean())}
    if labels is not None:
        target = np.array([labels[f] for f in files])
        result["top1"] = float((logits.argmax(1) == target).mean())
        result["top5"] = float((np.argsort(-logits, 1)[:, :5] == target[:, None]).any(1).mean())
    return result


def _error(match: str, *args, **kwargs) -> str:
    with pytest.raises(GraphoptError, match=match) as info:
        evaluate(*args, progress=False, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("layout", ["wnid", "index"])
def test_class_folders(models, tmp_path, layout):
    labels = _write(tmp_path, ITEMS, layout)
    result = evaluate([models["base"], models["perturbed"]], tmp_path, progress=False, batch=7)
    base, perturbed = result.models
    assert result.labels == "class folders" and result.scored == 40 and result.classes == CLASSES
    assert base.top1 == 0.75 == _expected(models["base"], tmp_path, labels)["top1"]
    assert base.top5 == _expected(models["base"], tmp_path, labels)["top5"]
    assert base.agreement_top1 == 1.0
    expected = _expected(models["perturbed"], tmp_path, labels, reference=models["base"])
    assert perturbed.agreement_top1 == expected["agree"] == 1 - 8 / 40  # templates 0 and 1 swap
    assert (perturbed.top1, perturbed.top5) == (expected["top1"], expected["top5"])
    for score in result.models:
        for value, (low, high) in [(score.top1, score.top1_interval), (score.top5, score.top5_interval),
                                   (score.agreement_top1, score.agreement_top1_interval)]:
            assert 0 <= low <= value <= high <= 1


def test_classes_file_sets_the_order(models, tmp_path):
    order = WNIDS[::-1]  # class k is the k-th line, not the k-th in sorted order
    (tmp_path / "classes.txt").write_text("".join(f"{w} class {k}, alias\n" for k, w in enumerate(order)))
    labels = _write(tmp_path / "images", ITEMS, "wnid", names=order)
    result = evaluate([models["base"]], tmp_path / "images", classes=tmp_path / "classes.txt", progress=False)
    assert result.models[0].top1 == 0.75 == _expected(models["base"], tmp_path / "images", labels)["top1"]
    # without the file the reversed folders are read in sorted order: a valid labelling, but not this one
    assert evaluate([models["base"]], tmp_path / "images", progress=False).models[0].top1 < 0.75


def test_labels_file_forms(models, tmp_path):
    labels = _write(tmp_path / "data", ITEMS)
    (tmp_path / "labels.txt").write_text("# name label\n" + "".join(f"{n} {l}\n" for n, l in labels.items()))
    (tmp_path / "dataset.txt").write_text("".join(f"./data/{n}, {l}\n" for n, l in labels.items()))
    (tmp_path / "extra.txt").write_text("".join(f"{n} {l}\n" for n, l in [*labels.items(), ("gone.png", 3)]))
    for name in ("labels.txt", "dataset.txt", "extra.txt"):  # extra.txt also labels a file that is not there
        result = evaluate([models["base"]], tmp_path / "data", labels=tmp_path / name, progress=False)
        assert result.labels == f"labels file {tmp_path / name}"
        assert result.models[0].top1 == 0.75 == _expected(models["base"], tmp_path / "data", labels)["top1"]


def test_labels_by_class_name(models, tmp_path):
    labels = _write(tmp_path / "images", ITEMS)
    (tmp_path / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    (tmp_path / "labels.txt").write_text("".join(f"{n} {WNIDS[l]}\n" for n, l in labels.items()))
    result = evaluate([models["base"]], tmp_path / "images", labels=tmp_path / "labels.txt",
                      classes=tmp_path / "classes.txt", progress=False)
    assert result.models[0].top1 == 0.75
    _error(r"unknown label 'n\d{8}'.*--classes", [models["base"]], tmp_path / "images", labels=tmp_path / "labels.txt")


def test_unlabelled_folder_scores_agreement_only(models, tmp_path):
    _write(tmp_path, ITEMS)
    result = evaluate([models["base"], models["perturbed"], models["base"]], tmp_path, progress=False)
    assert not result.labelled and result.models[0].top1 is None and result.models[0].top5 is None
    assert [m.agreement_top1 for m in result.models] == [1.0, 0.8, 1.0]
    assert len({m.name for m in result.models}) == 3  # the same file twice still gets two names
    text = format_table(result)
    assert "top-1 agreement" in text and "top-5" not in text and "no labels" in text
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["models"][1]["agreement_top1"] == 0.8 and payload["models"][1]["top1"] is None


def test_table_and_json(models, tmp_path):
    _write(tmp_path, ITEMS, "index")
    result = evaluate([models["base"], models["perturbed"]], tmp_path, progress=False)
    text = format_table(result)
    assert "base.onnx" in text and "perturbed.onnx" in text and "top-5" in text and "0.750" in text
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    first = payload["models"][0]
    assert first["top1"] == 0.75 and first["top1_correct"] == 30 and first["images"] == 40
    assert first["top1_interval"][0] < 0.75 < first["top1_interval"][1]
    assert payload["images_scored"] == 40 and payload["agreement_reference"] == "base.onnx"


def test_intervals_shrink_with_more_images(models, tmp_path):
    labels = _write(tmp_path / "images", ITEMS)
    names = sorted(labels)
    (tmp_path / "few.txt").write_text("".join(f"{n} {labels[n]}\n" for n in names[:8]))
    (tmp_path / "few").mkdir()
    for name in names[:8]:
        (tmp_path / "few" / name).write_bytes((tmp_path / "images" / name).read_bytes())
    (tmp_path / "all.txt").write_text("".join(f"{n} {labels[n]}\n" for n in names))
    few = evaluate([models["base"]], tmp_path / "few", labels=tmp_path / "few.txt", progress=False).models[0]
    many = evaluate([models["base"]], tmp_path / "images", labels=tmp_path / "all.txt", progress=False).models[0]
    assert few.top1 == many.top1 == 0.75
    width = [m.top1_interval[1] - m.top1_interval[0] for m in (few, many)]
    assert width[1] < width[0]
    low, high = wilson(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)  # the textbook value
    assert wilson(10, 10)[1] == 1 and wilson(5, 10)[0] == pytest.approx(1 - wilson(5, 10)[1])


def test_fixed_batch_model_and_streaming(models, tmp_path):
    _write(tmp_path, ITEMS[:37], "index")  # not a multiple of the fixed batch of 4 or of the streaming batch
    dynamic = evaluate([models["base"]], tmp_path, progress=False, batch=5).models[0]
    fixed = evaluate([models["fixed"], models["base"]], tmp_path, progress=False, batch=3).models
    assert fixed[0].top1_correct == dynamic.top1_correct and fixed[0].images == 37
    assert fixed[1].agreement_top1 == 1.0


def test_few_classes_have_no_top5(models, tmp_path):
    _write(tmp_path, [(t % 4, t % 4) for t in range(8)], "index")
    result = evaluate([models["four"]], tmp_path, progress=False)
    assert result.models[0].top1 == 1.0 and result.models[0].top5 is None
    assert "top-5" not in format_table(result)


def test_unreadable_file_is_skipped(models, tmp_path):
    _write(tmp_path, ITEMS[:8], "index")
    (tmp_path / "3" / "broken.jpg").write_bytes(b"not a jpeg")
    result = evaluate([models["base"]], tmp_path, progress=False)
    assert result.scored == 8 and result.skipped == ("3/broken.jpg",)
    assert "skipped 1" in format_table(result)


def test_bad_label_inputs(models, tmp_path):
    labels = _write(tmp_path / "data", ITEMS[:6])
    base = [models["base"]]
    rows = list(labels.items())

    def labels_file(name: str, lines: list[str]):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return tmp_path / name

    _error("label 10 of img00.png is outside the model's 10 classes", base, tmp_path / "data",
           labels=labels_file("range.txt", [f"{n} {10 if i == 0 else l}" for i, (n, l) in enumerate(rows)]))
    _error("unknown label 'cat'", base, tmp_path / "data",
           labels=labels_file("cat.txt", [f"{n} {'cat' if i == 1 else l}" for i, (n, l) in enumerate(rows)]))
    _error("1 of 6 images .* have no label .*first: img05.png", base, tmp_path / "data",
           labels=labels_file("short.txt", [f"{n} {l}" for n, l in rows[:5]]))
    _error("line 2: expected 'NAME LABEL'", base, tmp_path / "data",
           labels=labels_file("bad.txt", [f"{rows[0][0]} 1", "lonely"]))
    _error("line 7: img00.png is labelled both 3 and 2", base, tmp_path / "data",
           labels=labels_file("twice.txt", [f"{n} {l}" for n, l in rows] + [f"{rows[0][0]} 2"]))
    _error("labels file not found", base, tmp_path / "data", labels=tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\xfa name 1\n")
    _error("cannot read labels file", base, tmp_path / "data", labels=tmp_path / "binary.txt")
    _error("classes file .* names 3 classes; the model has 10", base, tmp_path / "data",
           classes=labels_file("three.txt", WNIDS[:3]))
    _error("names 'n01440764' twice", base, tmp_path / "data",
           classes=labels_file("twice_classes.txt", [WNIDS[0]] * 10))


def test_bad_folders(models, tmp_path):
    base = [models["base"]]
    (tmp_path / "empty").mkdir()
    _error("image folder .*empty is empty", base, tmp_path / "empty")
    _error("image folder not found", base, tmp_path / "nowhere")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    _error("no images", base, tmp_path / "texts")
    _write(tmp_path / "stray", ITEMS[:10], "wnid")
    Image.fromarray(_templates()[0]).save(tmp_path / "stray" / "top.png")
    _error("top.png is not directly in a class sub-folder", base, tmp_path / "stray")
    _write(tmp_path / "range", ITEMS[:4], "index")
    (tmp_path / "range" / "3").rename(tmp_path / "range" / "12")
    _error("label 12 .* outside the model's 10 classes", base, tmp_path / "range")
    _write(tmp_path / "partial", [(k, k) for k in range(5)], "wnid")  # 5 wnid folders for a 10-class model
    _error("5 class folders, indexed in sorted order, but the model has 10 classes: give --classes", base,
           tmp_path / "partial")
    (tmp_path / "classes.txt").write_text("\n".join(WNIDS[1:] + ["n99999999"]) + "\n")
    _error(f"folder '{WNIDS[0]}' .* is not a class of the classes file", base, tmp_path / "partial",
           classes=tmp_path / "classes.txt")
    _write(tmp_path / "mixed", ITEMS[:3], "index")
    _write(tmp_path / "mixed", ITEMS[3:6], "wnid")
    _error("mixes class folders named by index and by wnid", base, tmp_path / "mixed")


def test_bad_models(models, tmp_path):
    _write(tmp_path, ITEMS[:4])
    _error(r"differ in class count \(base.onnx: 10, eight.onnx: 8\)", [models["base"], models["eight"]], tmp_path)
    _error("at least one model", [], tmp_path)
    _error("model not found", [tmp_path / "none.onnx"], tmp_path)
    _error("unknown preprocessing setting.*colour", [models["base"]], tmp_path, preprocess={"colour": "rgb"})
    _error("size 20x20 does not match", [models["base"]], tmp_path, preprocess={"size": 20})
    _error("batch size must be positive", [models["base"]], tmp_path, batch=0)


def test_preprocess_options_reach_the_model(models, tmp_path):
    _write(tmp_path, ITEMS, "index")
    direct = evaluate([models["base"]], tmp_path, preprocess={"resize": "direct", "norm": "tf"}, progress=False)
    assert direct.models[0].preprocess["resize"] == "direct"
    assert direct.models[0].preprocess["mean"] == pytest.approx((127 / 255,) * 3)
    assert direct.scored == 40 and direct.models[0].preprocess["size"] == (SIZE, SIZE)


def test_models_with_other_input_sizes(models, tmp_path):
    """Each model gets its own preprocessing (here 12x12 beside 16x16) from the same decoded images."""
    labels = _write(tmp_path, ITEMS, "index")
    small, base = evaluate([models["small"], models["base"]], tmp_path, progress=False, batch=6).models
    assert small.preprocess["size"] == (12, 12) and base.preprocess["size"] == (SIZE, SIZE)
    expected = _expected(models["base"], tmp_path, labels, reference=models["small"])
    assert (base.agreement_top1, base.top1) == (expected["agree"], expected["top1"]) and small.agreement_top1 == 1.0
    assert small.top1 == _expected(models["small"], tmp_path, labels)["top1"]


def test_the_eval_command(models, tmp_path, capsys):
    """`graphopt eval` as a user runs it: a table, --json, and a wrong label as one error line."""
    images = tmp_path / "images"
    labels = _write(images, ITEMS, "wnid")
    assert main(["eval", models["base"], models["perturbed"], "--images", str(images), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "base.onnx" in table and "0.750" in table and "0.800" in table
    assert main(["eval", models["base"], "--images", str(images), "--json", "--quiet", "--batch", "5"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["models"][0]["top1"] == 0.75 and payload["images_scored"] == len(labels)
    flat = tmp_path / "flat"
    _write(flat, ITEMS[:4])
    (tmp_path / "labels.txt").write_text("img00.png 0\nimg01.png 1\nimg02.png 2\nimg03.png 10\n")
    assert main(["eval", models["base"], "--images", str(flat), "--labels", str(tmp_path / "labels.txt")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("graphopt: error: ")]
    assert len(errors) == 1 and "img03.png" in errors[0], errors
    (tmp_path / "empty").mkdir()
    assert main(["eval", models["base"], "--images", str(tmp_path / "empty")]) == 1
    assert "empty" in capsys.readouterr().err
