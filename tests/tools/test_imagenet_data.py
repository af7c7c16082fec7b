"""tools/imagenet_data: the split of tiny fake acuity/imagenette copies (seeded, nested, disjoint, labelled)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from graphopt.errors import GraphoptError
from tools import imagenet_data


def _photo(rng: np.random.Generator, size: int = 32) -> Image.Image:
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.BILINEAR)


@pytest.fixture
def sources(tmp_path):
    """30 labelled 'validation' photos and 3 imagenette classes of 8; imagenette holds one acuity photo under its
    own name, one re-encoded at another size under another name, and one byte-identical copy under another name."""
    rng = np.random.default_rng(0)
    acuity = tmp_path / "ILSVRC2012_VAL_SET"
    (acuity / "data").mkdir(parents=True)
    lines, photos = [], []
    for i in range(30):
        name = f"ILSVRC2012_val_{i * 7 + 1:08d}.JPEG"
        photos.append(_photo(rng))
        photos[-1].save(acuity / "data" / name, quality=95)
        lines.append(f"./data/{name}, {i * 31 % 1000}\n")
    (acuity / "dataset.txt").write_text("".join(lines))
    (acuity / "synset_words.txt").write_text("".join(f"n{k:08d} class {k}\n" for k in range(1000)))
    wnids = ["n01440764", "n02102040", "n02979186"]
    for c, wnid in enumerate(wnids):
        folder = tmp_path / "imagenette" / "train" / wnid
        folder.mkdir(parents=True)
        for j in range(8):
            _photo(rng, 24).save(folder / f"{wnid}_{j}.JPEG")
    train = tmp_path / "imagenette" / "train"
    photos[3].resize((28, 28)).save(train / wnids[0] / "ILSVRC2012_val_00000022.JPEG")  # acuity's 4th, by name
    photos[5].resize((30, 30)).save(train / wnids[1] / "n02102040_copy.JPEG", quality=80)  # acuity's 6th, re-encoded
    (train / wnids[2] / "n02979186_bytes.JPEG").write_bytes((acuity / "data" / "ILSVRC2012_val_00000057.JPEG")
                                                          .read_bytes())  # acuity's 9th, same bytes
    return acuity, tmp_path / "imagenette"


def _layout(sources, seed: int = 0, size: int = 24) -> dict:
    acuity, imagenette = sources
    return imagenet_data.plan(imagenet_data.read_acuity(acuity), imagenet_data.read_imagenette(imagenette), seed,
                              acuity_sizes=(5, 10), imagenette_size=size)


def test_plan_is_seeded_nested_and_disjoint(sources):
    layout = _layout(sources)
    sets = layout["sets"]
    assert [len(sets[k]) for k in ("calib-5", "calib-10", "calib-24", "eval")] == [5, 10, 24, 20]
    assert sets["calib-10"][:5] == sets["calib-5"]
    assert not {p.name for p in sets["calib-10"]} & {p.name for p in sets["eval"]}
    assert {p.name for p in sets["calib-10"] + sets["eval"]} == {p.name for p in imagenet_data.read_acuity(sources[0])}
    # each class has 9 files, one of them an acuity photo: 8 usable, so 9 per class cannot be drawn
    with pytest.raises(GraphoptError, match="usable photos"):
        _layout(sources, size=24 + 3)
    layout = _layout(sources, size=21)
    reasons = sorted(e["reason"].split(" as ")[0] for e in layout["excluded"])
    assert reasons == ["same ImageNet file name", "same bytes", "same picture"]
    assert {e["file"].split("/")[-1] for e in layout["excluded"]} == {
        "ILSVRC2012_val_00000022.JPEG", "n02102040_copy.JPEG", "n02979186_bytes.JPEG"}
    assert all(p.name.count("_copy") + p.name.count("_bytes") + p.name.count("ILSVRC") == 0
               for p in layout["sets"]["calib-21"])
    assert [p.name for p in _layout(sources, seed=0)["sets"]["calib-10"]] == [p.name for p in sets["calib-10"]]
    assert [p.name for p in _layout(sources, seed=1)["sets"]["calib-10"]] != [p.name for p in sets["calib-10"]]


def test_check_catches_a_photo_on_both_sides(sources):
    layout = _layout(sources, size=21)
    sets = layout["sets"]
    imagenet_data.check_disjoint(sets)
    with pytest.raises(GraphoptError, match="also in the evaluation set"):
        imagenet_data.check_disjoint({**sets, "calib-5": sets["calib-5"] + sets["eval"][:1]})


@pytest.mark.parametrize("link", ["copy", "symlink"])
def test_main_writes_layout_labels_and_manifest(sources, tmp_path, link):
    acuity, imagenette = sources
    out = tmp_path / "sets"
    args = ["--acuity", str(acuity), "--imagenette", str(imagenette), "--out", str(out), "--link", link,
            "--acuity-commit", "abc", "--acuity-sizes", "5", "10", "--imagenette-size", "21"]
    assert imagenet_data.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: v["count"] for k, v in manifest["sets"].items()} == {"calib-5": 5, "calib-10": 10, "calib-21": 21,
                                                                     "eval": 20}
    assert manifest["sources"]["acuity"]["commit"] == "abc" and manifest["seed"] == 0
    assert len(manifest["excluded_from_calibration"]) == 3
    assert sorted(p.name for p in (out / "calib-21").iterdir()) == sorted(
        f["file"] for f in manifest["sets"]["calib-21"]["files"])
    labels = dict(line.split() for line in (out / "eval" / "labels.txt").read_text().splitlines())
    assert sorted(labels) == sorted(p.name for p in (out / "eval" / "images").iterdir())
    original = {line.split(",")[0][len("./data/"):]: line.split(", ")[1]
                for line in (acuity / "dataset.txt").read_text().splitlines()}
    assert all(original[name] == label for name, label in labels.items())
    assert len((out / "classes.txt").read_text().splitlines()) == 1000
    assert next((out / "calib-5").iterdir()).is_symlink() == (link == "symlink")
    with pytest.raises(GraphoptError, match="exists; give --force"):
        imagenet_data.main(args)
    assert imagenet_data.main(args + ["--force", "--seed", "3"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3


def test_missing_sources(tmp_path):
    with pytest.raises(GraphoptError, match="dataset.txt not found"):
        imagenet_data.read_acuity(tmp_path)
    with pytest.raises(GraphoptError, match="no class folders"):
        imagenet_data.read_imagenette(tmp_path)


def test_fingerprint_survives_reencoding(tmp_path):
    image = _photo(np.random.default_rng(5), 64)
    image.save(tmp_path / "a.png")
    buffer = io.BytesIO()
    image.resize((50, 50)).save(buffer, "JPEG", quality=70)
    (tmp_path / "b.jpg").write_bytes(buffer.getvalue())
    a, b = imagenet_data.fingerprint(tmp_path / "a.png"), imagenet_data.fingerprint(tmp_path / "b.jpg")
    assert a.sha256 != b.sha256 and int((a.dhash != b.dhash).sum()) <= imagenet_data.SAME_PHOTO_BITS
