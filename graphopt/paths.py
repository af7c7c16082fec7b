"""Every file a command will read and write, resolved and checked before any work starts.

A run can take ten minutes; it must not find out at its end that an output folder is read-only, and no output may
land on a file the run reads: the model, the weights file its external data points at, a calibration file, or
another output of the same run (`-o X.onnx --report X.onnx`). Paths are compared after resolving symlinks, and by
device and inode where both exist, so a link or a hard link to the input counts as the input.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from graphopt.errors import GraphoptError

# save_model writes a model too large for one protobuf with its weights in `<name>.data` beside it
EXTERNAL_DATA_SUFFIX = ".data"


def model_files(path: str | os.PathLike) -> list[Path]:
    """The model file and every external-data file it references (resolved against the model's folder)."""
    path = Path(path)
    if not path.is_file():
        return [path]  # load_model says what is wrong with it
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model is load_model's to report, with its own message
        return [path]
    locations = {ExternalDataInfo(tensor).location for tensor in _tensors(proto.graph) if uses_external_data(tensor)}
    return [path, *(path.parent / location for location in sorted(locations) if location)]


def check_outputs(outputs: dict[str, str | os.PathLike | None], model: str | os.PathLike | None = None,
                  calibration: str | os.PathLike | None = None) -> None:
    """Refuse, with one line, any output that overlaps what the run reads (the `model` file and its external data,
    a file in the `calibration` folder) or another output, names a folder or something other than a regular file,
    or lies in a folder that is missing or cannot be written.

    `outputs` maps the option that names each output ("-o", "--report", ...) to its path (None: not asked for).
    An "-o" model may also write its weights to `<name>.data`, which is checked like the model itself.
    """
    reads = model_files(model) if model is not None else []
    claimed: list[tuple[str, Path]] = []
    for flag, value in outputs.items():
        if value is None:
            continue
        path = Path(value)
        _check_target(flag, path)
        targets = [path] + ([path.with_name(path.name + EXTERNAL_DATA_SUFFIX)] if flag == "-o" else [])
        for target in targets:
            _check_not_read(flag, target, reads, calibration)
            for other_flag, other in claimed:
                if _same(target, other):
                    raise GraphoptError(f"{other_flag} and {flag} both name {other}; give each output its own file")
            claimed.append((flag, target))


def _check_target(flag: str, path: Path) -> None:
    if path.is_dir():
        raise GraphoptError(f"cannot write {flag} {path}: it is a folder")
    if path.exists() and not path.is_file():
        raise GraphoptError(f"cannot write {flag} {path}: it exists and is not a regular file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GraphoptError(f"cannot write {flag} {path}: folder {folder} does not exist")
    try:  # permissions alone do not tell (root, read-only mounts, /proc): create and remove a file there
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise GraphoptError(f"cannot write {flag} {path}: {exc.strerror or exc} in folder {folder}") from None


def _check_not_read(flag: str, target: Path, reads: list[Path], calibration: str | os.PathLike | None) -> None:
    for index, read in enumerate(reads):
        if _same(target, read):
            kind = "the input model" if index == 0 else f"the input model's weights file {read.name}"
            raise GraphoptError(f"{flag} {target} is {kind}; graphopt never overwrites its input")
    if calibration is not None and target.is_file() and _inside(target, Path(calibration)):
        raise GraphoptError(f"{flag} {target} is a file in the calibration folder {calibration}; graphopt never "
                            f"overwrites its input")


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and attribute tensors of `graph` and of every subgraph in it."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)
