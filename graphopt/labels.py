"""Ground-truth labels for a folder of images, as `graphopt eval` reads them.

From class sub-folders (the ImageFolder layout: folders named by wnid, indexed in sorted order or in the order of a
classes file, or folders named by the class index itself) or from a labels file of `NAME LABEL` lines (also the
acuity-dataset form `./data/NAME.JPEG, LABEL`). Every label is checked against the model's class count before any
image is decoded, so a wrong label is one error line, not a wrong accuracy.
"""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from graphopt.calibration.data.images import Folder
from graphopt.errors import GraphoptError, first_line

WNID = re.compile(r"n\d{8}")


def resolve_labels(folder: Folder, labels: str | os.PathLike | None, classes: str | os.PathLike | None,
                    class_total: int) -> tuple[dict[str, int] | None, str | None]:
    """{image path relative to the folder: class index} and where the labels came from; (None, None) without
    labels. Every label is checked against the model's class count before any image is decoded."""
    index = _read_classes(Path(classes)) if classes is not None else None
    if index is not None and len(index) != class_total:
        raise GraphoptError(f"classes file {classes} names {len(index)} classes; the model has {class_total}")
    if labels is not None:
        truth, source = _labels_from_file(folder, Path(labels), index), f"labels file {labels}"
    else:
        truth, sorted_folders = _labels_from_folders(folder, index)
        source = None if truth is None else "class folders"
        if sorted_folders is not None and sorted_folders != class_total:
            raise GraphoptError(f"{folder.root} has {sorted_folders} class folders, indexed in sorted order, but the "
                                f"model has {class_total} classes: give --classes FILE (one wnid per line in the "
                                f"model's index order, e.g. ImageNet's synset_words.txt)")
    for name, label in (truth or {}).items():
        if not 0 <= label < class_total:
            raise GraphoptError(f"label {label} of {name} is outside the model's {class_total} classes "
                                f"(0-{class_total - 1})")
    return truth, source


def _labels_from_folders(folder: Folder, index: dict[str, int] | None) -> tuple[dict[str, int] | None, int | None]:
    """Labels from class sub-folders: (labels, number of folders when their sorted order is the index)."""
    parts = {p.relative_to(folder.root).as_posix(): p.relative_to(folder.root).parts for p in folder.images}
    names = sorted({p[0] for p in parts.values() if len(p) > 1})

    def is_class(name: str) -> bool:
        return bool(WNID.fullmatch(name)) or name.isdigit() or (index is not None and name in index)

    classy = [n for n in names if is_class(n)]
    if not classy:
        if index is not None:
            raise GraphoptError(f"no sub-folder of {folder.root} is named by a class of the classes file; "
                                "put images in class sub-folders or give --labels FILE")
        return None, None  # flat or nested without class names: agreement only
    outside = [rel for rel, p in parts.items() if len(p) != 2 or not is_class(p[0])]
    if outside:
        raise GraphoptError(f"{outside[0]} is not directly in a class sub-folder of {folder.root} ({len(outside)} "
                            "such images): class folders are named by wnid or class index; or give --labels FILE")
    if index is not None:
        missing = [n for n in classy if n not in index]
        if missing:
            raise GraphoptError(f"folder '{missing[0]}' in {folder.root} is not a class of the classes file")
        order, sorted_folders = index, None
    elif all(n.isdigit() for n in classy):
        order, sorted_folders = {n: int(n) for n in classy}, None
    elif any(n.isdigit() for n in classy):
        raise GraphoptError(f"{folder.root} mixes class folders named by index and by wnid; use one kind")
    else:
        order, sorted_folders = {n: i for i, n in enumerate(classy)}, len(classy)
    return {rel: order[p[0]] for rel, p in parts.items()}, sorted_folders


def _labels_from_file(folder: Folder, path: Path, index: dict[str, int] | None) -> dict[str, int]:
    """Every image's label from the file; names relative to the image folder or to the labels file's folder."""
    entries = _read_label_lines(path, index)
    prefix = os.path.relpath(folder.root.resolve(), path.resolve().parent)
    truth, missing = {}, []
    for image in folder.images:
        rel = image.relative_to(folder.root).as_posix()
        label = entries.get(rel, entries.get(posixpath.normpath(f"{Path(prefix).as_posix()}/{rel}")))
        if label is None:
            missing.append(rel)
        else:
            truth[rel] = label
    if missing:
        raise GraphoptError(f"{len(missing)} of {len(folder.images)} images in {folder.root} have no label in {path} "
                            f"(first: {missing[0]}); names are read relative to {folder.root} or to the labels "
                            "file's folder")
    return truth


def _read_label_lines(path: Path, index: dict[str, int] | None) -> dict[str, int]:
    """`NAME LABEL` or `NAME, LABEL` lines -> {normalised name: class index}; LABEL is an index or a class name."""
    entries: dict[str, int] = {}
    for number, line in enumerate(_read_text(path, "labels file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.rsplit(",", 1)] if "," in line else line.rsplit(None, 1)
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise GraphoptError(f"{path} line {number}: expected 'NAME LABEL', got '{line[:80]}'")
        name, token = posixpath.normpath(fields[0].replace("\\", "/")), fields[1]
        if token.isdigit():
            label = int(token)
        elif index is not None and token in index:
            label = index[token]
        else:
            hint = "not in the classes file" if index is not None else "not a class index (or give --classes FILE)"
            raise GraphoptError(f"{path} line {number}: unknown label '{token[:40]}' for {name}: {hint}")
        if entries.setdefault(name, label) != label:
            raise GraphoptError(f"{path} line {number}: {name} is labelled both {entries[name]} and {label}")
    if not entries:
        raise GraphoptError(f"labels file {path} has no 'NAME LABEL' lines")
    return entries


def _read_classes(path: Path) -> dict[str, int]:
    """One class per line (its first word: `n01440764` or `n01440764 tench, Tinca tinca`) -> {name: index}."""
    names = [re.split(r"[\s,]+", line.strip(), maxsplit=1)[0]
             for line in _read_text(path, "classes file").splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise GraphoptError(f"classes file {path} names no classes")
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        if index.setdefault(name, position) != position:
            raise GraphoptError(f"classes file {path} names '{name}' twice (lines {index[name] + 1} and "
                                f"{position + 1}, blank lines not counted)")
    return index


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise GraphoptError(f"{what} not found: {path}" if not path.exists() else f"{what} is not a file: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphoptError(f"cannot read {what} {path}: {first_line(exc)}") from None
