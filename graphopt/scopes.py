"""Module paths that exporters leave on nodes, used to give blocks stable human names like `layer2.1`."""
from __future__ import annotations

import ast

import onnx

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def module_path(node: onnx.NodeProto) -> list[str]:
    """Fully qualified module paths enclosing `node`, outermost first; empty when the exporter left none.

    dynamo exports store them in node metadata; TorchScript exports encode them in the node name
    (`/features/features.1/conv/conv.0/Conv`, where each component is relative to its parent).
    """
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [s for s in scopes[:-1] if s]
    if not node.name.startswith("/"):
        return []
    paths: list[str] = []
    previous = ""
    for component in node.name.strip("/").split("/")[:-1]:
        if previous and component.startswith(previous + "."):
            parent = paths[-1][: len(paths[-1]) - len(previous)]
            paths.append(parent + component)
        else:
            paths.append(f"{paths[-1]}.{component}" if paths else component)
        previous = component
    return paths


def common_module(nodes: list[onnx.NodeProto]) -> str | None:
    """The innermost module that encloses every node, or None if they share none."""
    paths = [module_path(n) for n in nodes]
    if not paths or not all(paths):
        return None
    common = paths[0]
    for other in paths[1:]:
        length = 0
        while length < min(len(common), len(other)) and common[length] == other[length]:
            length += 1
        common = common[:length]
    return common[-1] if common else None
