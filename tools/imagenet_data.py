"""Labelled ImageNet benchmark data: seeded calibration sets and an evaluation set no calibration set touches.

Why: the yardstick for an ImageNet model is labelled top-1 on validation photos that calibration never saw
(shared/benchmarks.md, section 0). This tool makes that split once, reproducibly, from two public repositories, and
records which file went where.

Sources (local copies; `bash tools/install_bench_data.sh` with IMAGENET_DATA set fetches and extracts them):
- github.com/VeriSilicon/acuity-dataset, folder `ILSVRC2012_VAL_SET/`: `data/` holds 1,300 ILSVRC2012 validation
  JPEGs (pre-scaled to 227x227), `dataset.txt` labels them in lines `./data/NAME.JPEG, LABEL` (0-based, sorted-wnid
  order, the index every ImageNet model uses) and `synset_words.txt` lists the 1,000 wnids in that order.
- github.com/thunderInfy/imagenette: `train/` and `val/` folders named by wnid (10 classes, ImageNet indices 0, 217,
  482, 491, 497, 566, 569, 571, 574, 701), 224x224 photos. Its `train/` also holds a few ILSVRC2012 validation
  photos, 9 of them among acuity's 1,300 (re-encoded at another size, so their bytes differ).

Layout written under OUT (copies by default, `--link symlink` for links):

    OUT/calib-50/     50 acuity validation JPEGs, a seeded draw (flat folder, no labels)
    OUT/calib-100/    100 acuity validation JPEGs: the same draw continued (calib-50 is its first half)
    OUT/calib-500/    500 imagenette train JPEGs, 50 per class, seeded (names keep or gain the WNID_ prefix)
    OUT/eval/images/  the 1,200 acuity validation JPEGs no calibration set used
    OUT/eval/labels.txt   `NAME LABEL` lines for eval/images (graphopt eval --labels)
    OUT/classes.txt   the 1,000 wnids in index order (graphopt eval --classes, for wnid folders such as imagenette)
    OUT/manifest.json seed, sources (with commits when given), every file's origin and SHA-256, what was excluded

No photo is in both a calibration set and the evaluation set: imagenette files are drawn only if they are not an
acuity photo by ImageNet file name, by content digest (SHA-256), or by a 256-bit difference hash of the picture
(re-encoded copies differ in bytes; on these sources the 9 shared photos are 2-19 bits apart, distinct photos 25 or
more), and the written sets are checked for all three before the folder is put in place.

    python -m tools.imagenet_data --acuity SRC/ILSVRC2012_VAL_SET --imagenette SRC/imagenette --out OUT [--seed 0]
        [--acuity-sizes 50 100] [--imagenette-size 500] [--link copy|symlink] [--force]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from graphopt.errors import GraphoptError
from tools.bench.common import BenchDataMissing, run_cli

ACUITY_REPO = "github.com/VeriSilicon/acuity-dataset"
IMAGENETTE_REPO = "github.com/thunderInfy/imagenette"
INSTALL_HINT = "IMAGENET_DATA=DIR bash tools/install_bench_data.sh"
ACUITY_SIZES = (50, 100)
IMAGENETTE_SIZE = 500
DHASH_SIDE = 16  # 16x16 = 256 bits
SAME_PHOTO_BITS = 20  # hashes at most this far apart are taken as the same photo
IMAGENET_ID = re.compile(r"ILSVRC2012_val_\d{8}")


@dataclass(frozen=True)
class Photo:
    """One source file: where it is, what it is called in a set, its label (acuity only) and its identity."""

    path: Path
    name: str
    label: int | None = None

    @property
    def key(self) -> str:
        """The ImageNet photo id (`ILSVRC2012_val_00000293`) where the name has one, else the file's stem."""
        match = IMAGENET_ID.search(self.path.name)
        return match.group(0) if match else self.path.stem


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    dhash: np.ndarray


def fingerprint(path: Path) -> Fingerprint:
    """Content digest and difference hash (grey, 17x16, sign of each horizontal step) of one image file."""
    data = path.read_bytes()
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L").resize((DHASH_SIDE + 1, DHASH_SIDE), Image.BILINEAR), dtype=np.int16)
    return Fingerprint(hashlib.sha256(data).hexdigest(), (grey[:, 1:] > grey[:, :-1]).ravel())


def read_acuity(folder: Path) -> list[Photo]:
    """The labelled validation photos of acuity's ILSVRC2012_VAL_SET folder, in dataset.txt order."""
    labels = folder / "dataset.txt"
    if not labels.is_file():
        raise BenchDataMissing(f"{labels} not found: give the extracted ILSVRC2012_VAL_SET folder of {ACUITY_REPO} "
                               f"({INSTALL_HINT})")
    photos = []
    for number, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, _, label = line.rpartition(",")
        path = folder / name.strip()
        if not label.strip().isdigit() or not path.is_file():
            raise GraphoptError(f"{labels} line {number}: expected './data/NAME.JPEG, LABEL' naming a file there, "
                                f"got '{line[:80]}'")
        photos.append(Photo(path, path.name, int(label)))
    if len({p.name for p in photos}) != len(photos):
        raise GraphoptError(f"{labels} names a file twice")
    return photos


def read_imagenette(folder: Path) -> dict[str, list[Photo]]:
    """imagenette's train/ photos by wnid, sorted; in a set each keeps its name, prefixed by WNID_ unless it has it."""
    train = folder / "train"
    classes = sorted(p for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not classes:
        raise BenchDataMissing(f"no class folders in {train}: give the extracted {IMAGENETTE_REPO} folder "
                               f"({INSTALL_HINT})")
    return {c.name: [Photo(p, p.name if p.name.startswith(c.name) else f"{c.name}_{p.name}")
                     for p in sorted(c.iterdir()) if p.suffix.lower() == ".jpeg"] for c in classes}


def plan(acuity: list[Photo], imagenette: dict[str, list[Photo]], seed: int = 0,
         acuity_sizes: tuple[int, ...] = ACUITY_SIZES, imagenette_size: int = IMAGENETTE_SIZE) -> dict:
    """Which photo goes where: nested seeded draws from acuity, a per-class seeded draw from imagenette that skips
    anything matching an acuity photo, and every acuity photo no draw took as the evaluation set."""
    largest = max(acuity_sizes)
    if largest >= len(acuity):
        raise GraphoptError(f"acuity has {len(acuity)} photos; calibration sets of up to {largest} leave none "
                            "to score")
    order = np.random.default_rng(seed).permutation(len(acuity))
    drawn = [acuity[i] for i in order[:largest]]
    sets = {f"calib-{n}": drawn[:n] for n in sorted(acuity_sizes)}
    reference = {p.key: fingerprint(p.path) for p in acuity}
    sets[f"calib-{imagenette_size}"], excluded = _draw_imagenette(imagenette, imagenette_size, seed, reference)
    taken = {p.name for p in drawn}
    sets["eval"] = [p for p in acuity if p.name not in taken]
    return {"sets": sets, "excluded": excluded}


def _draw_imagenette(by_class: dict[str, list[Photo]], size: int, seed: int,
                     reference: dict[str, Fingerprint]) -> tuple[list[Photo], list[dict]]:
    """`size` photos spread evenly over the classes (the first classes take the remainder), each class in a seeded
    order, skipping photos that are an acuity photo by name, digest or picture."""
    rng = np.random.default_rng([seed, 1])
    digests = {f.sha256: k for k, f in reference.items()}
    hashes, keys = np.stack([f.dhash for f in reference.values()]), list(reference)
    chosen, excluded = [], []
    for position, (wnid, photos) in enumerate(by_class.items()):
        quota = size // len(by_class) + (position < size % len(by_class))
        picked = []
        for index in rng.permutation(len(photos)):
            if len(picked) == quota:
                break
            photo = photos[index]
            reason = _same_photo(photo, digests, hashes, keys, reference)
            if reason:
                excluded.append({"file": _source(photo), "reason": reason})
            else:
                picked.append(photo)
        if len(picked) < quota:
            raise GraphoptError(f"imagenette class {wnid} has {len(picked)} usable photos; {quota} are needed")
        chosen += picked
    return chosen, excluded


def _same_photo(photo: Photo, digests: dict[str, str], hashes: np.ndarray, keys: list[str],
                reference: dict[str, Fingerprint]) -> str | None:
    """Why `photo` is one of the reference photos, or None."""
    if photo.key in reference:
        return f"same ImageNet file name as acuity's {photo.key}"
    mark = fingerprint(photo.path)
    if mark.sha256 in digests:
        return f"same bytes as acuity's {digests[mark.sha256]}"
    distance = (hashes != mark.dhash).sum(1)
    nearest = int(distance.argmin())
    if distance[nearest] <= SAME_PHOTO_BITS:
        return f"same picture as acuity's {keys[nearest]} ({int(distance[nearest])} of 256 hash bits differ)"
    return None


def check_disjoint(sets: dict[str, list[Photo]]) -> dict:
    """Raise unless no evaluation photo is, by name, bytes or picture, in any calibration set; say what was checked."""
    evaluation = {p.key: fingerprint(p.path) for p in sets["eval"]}
    digests = {f.sha256 for f in evaluation.values()}
    hashes = np.stack([f.dhash for f in evaluation.values()])
    for name, photos in sets.items():
        if name == "eval":
            continue
        for photo in photos:
            mark = fingerprint(photo.path)
            distance = int((hashes != mark.dhash).sum(1).min())
            if photo.key in evaluation or mark.sha256 in digests or distance <= SAME_PHOTO_BITS:
                raise GraphoptError(f"{_source(photo)} of {name} is also in the evaluation set "
                                    f"(name, bytes or picture; {distance} hash bits apart)")
    return {"by": ["ImageNet file name", "SHA-256 of the bytes",
                   f"difference hash within {SAME_PHOTO_BITS} of 256 bits"],
            "evaluation_photos": len(evaluation), "result": "no calibration photo is in the evaluation set"}


def write(layout: dict, out: Path, classes: Path | None, link: str = "copy", sources: dict | None = None,
          seed: int = 0, force: bool = False) -> dict:
    """Write the sets, labels, classes and manifest into `out`, atomically (a temporary folder renamed in place)."""
    if out.exists() and not force:
        raise GraphoptError(f"{out} exists; give --force to replace it")
    checks = check_disjoint(layout["sets"])
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = {"seed": seed, "sources": sources or {}, "link": link, "checks": checks, "sets": {},
                "excluded_from_calibration": layout["excluded"]}
    for name, photos in layout["sets"].items():
        folder = staging / ("eval/images" if name == "eval" else name)
        manifest["sets"][name] = {"folder": folder.relative_to(staging).as_posix(), "count": len(photos),
                                  "files": list(_place(photos, folder, link))}
    lines = [f"{p.name} {p.label}\n" for p in layout["sets"]["eval"]]
    (staging / "eval" / "labels.txt").write_text("".join(lines))
    manifest["sets"]["eval"]["labels"] = "eval/labels.txt"
    if classes is not None:
        shutil.copyfile(classes, staging / "classes.txt")
        manifest["classes"] = "classes.txt"
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return manifest


def _place(photos: Iterable[Photo], folder: Path, link: str) -> Iterable[dict]:
    folder.mkdir(parents=True)
    for photo in photos:
        target = folder / photo.name
        if link == "symlink":
            target.symlink_to(photo.path.resolve())
        else:
            shutil.copyfile(photo.path, target)
        digest = hashlib.sha256(photo.path.read_bytes()).hexdigest()
        record = {"file": photo.name, "from": _source(photo), "sha256": digest}
        yield record if photo.label is None else {**record, "label": photo.label}


def _source(photo: Photo) -> str:
    """The photo's path inside its repository (data/NAME.JPEG, train/WNID/NAME.JPEG)."""
    parts = photo.path.parts
    return "/".join(parts[-3:] if parts[-3] == "train" else parts[-2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.imagenet_data", description=__doc__.splitlines()[0])
    parser.add_argument("--acuity", type=Path, required=True, help="extracted ILSVRC2012_VAL_SET folder of acuity")
    parser.add_argument("--imagenette", type=Path, required=True, help="extracted imagenette folder (with train/)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not exist, or --force)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--link", choices=["copy", "symlink"], default="copy")
    parser.add_argument("--acuity-commit", help="commit of the acuity copy, recorded in the manifest")
    parser.add_argument("--imagenette-commit", help="commit of the imagenette copy, recorded in the manifest")
    parser.add_argument("--acuity-sizes", type=int, nargs="+", default=list(ACUITY_SIZES),
                        help="nested calibration sets drawn from acuity (default 50 100)")
    parser.add_argument("--imagenette-size", type=int, default=IMAGENETTE_SIZE,
                        help="calibration set drawn from imagenette train (default 500)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if min(args.acuity_sizes + [args.imagenette_size]) < 1:
        raise GraphoptError("calibration set sizes must be positive")
    acuity, imagenette = read_acuity(args.acuity), read_imagenette(args.imagenette)
    layout = plan(acuity, imagenette, args.seed, tuple(args.acuity_sizes), args.imagenette_size)
    sources = {"acuity": {"repository": ACUITY_REPO, "commit": args.acuity_commit, "folder": str(args.acuity),
                          "photos": len(acuity), "labels": "ILSVRC2012_VAL_SET/dataset.txt"},
               "imagenette": {"repository": IMAGENETTE_REPO, "commit": args.imagenette_commit,
                              "folder": str(args.imagenette), "train_photos": sum(map(len, imagenette.values()))}}
    classes = args.acuity / "synset_words.txt"
    manifest = write(layout, args.out, classes if classes.is_file() else None, args.link, sources, args.seed,
                     args.force)
    for name, record in manifest["sets"].items():
        print(f"{name}: {record['count']} files in {args.out / record['folder']}")
    print(f"excluded from calibration (same photo as an acuity one): {len(manifest['excluded_from_calibration'])}")
    return 0


if __name__ == "__main__":
    run_cli(main)
