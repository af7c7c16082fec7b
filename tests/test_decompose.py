"""DecomposeConv on real exports: exact at full rank (Conv plain and grouped, Gemm, MatMul), and at truncated ranks
equal to PyTorch running the same layers with their weights replaced by the truncated SVD."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from graphopt.errors import GraphoptError
from graphopt.passes import Basis, decompose_conv
from tests import zoo
from tests.helpers import assert_close, run_onnx


class _Layers(torch.nn.Module):
    """A conv, a grouped conv, a linear head and a matmul by a weight: one of each node DecomposeConv rewrites."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1, stride=2)
        self.grouped = torch.nn.Conv2d(16, 24, 3, padding=1, groups=2, bias=False)
        self.proj = torch.nn.Parameter(torch.randn(24, 12) / 5)
        self.fc = torch.nn.Linear(12 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.relu(self.conv(x))))  # (B, 24, 8, 8)
        x = x.flatten(2).transpose(1, 2)  # (B, 64, 24)
        x = torch.relu(torch.matmul(x, self.proj))[:, :16]  # (B, 16, 12)
        return self.fc(x.flatten(1))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return _Layers().eval()


def _truncated(weight: torch.Tensor, rank: int, groups: int = 1, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The weight rebuilt from its `rank` largest singular triplets per group (rows = outputs for a conv)."""
    parts = []
    for part in weight.chunk(groups):
        u, s, vt = torch.linalg.svd(part.reshape(part.shape[0], -1).double(), full_matrices=False)
        s = s * (scale.double() if scale is not None else 1)
        r = min(rank, len(s))
        parts.append((u[:, :r] * s[:r] @ vt[:r]).reshape(part.shape))
    return torch.cat(parts).float()


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def exported(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("decompose") / f"layers-{request.param}.onnx"
    zoo.export(_model(), torch.randn(2, 3, 16, 16), path, request.param)
    return onnx.load(str(path))


def _decomposable(model: onnx.ModelProto) -> list[str]:
    return [n.output[0] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]


def test_full_rank_is_exact(exported):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    names = _decomposable(exported)
    assert len(names) == 4, [n.op_type for n in exported.graph.node]
    before = onnx.ModelProto()
    before.CopyFrom(exported)
    decomposed = decompose_conv(exported, {name: Basis(rank=10_000) for name in names})
    onnx.checker.check_model(decomposed, full_check=True)
    ops = [n.op_type for n in decomposed.graph.node]
    assert sum(op in ("Conv", "Gemm", "MatMul") for op in ops) == 8
    assert exported == before  # the input model is not modified
    assert_close(run_onnx(decomposed, x), run_onnx(exported, x), tol=1e-4)


def test_truncated_ranks_match_pytorch(exported):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    rank, scale = 4, torch.linspace(0.5, 1.5, 12)
    reference = copy.deepcopy(_model())
    with torch.no_grad():
        reference.conv.weight.copy_(_truncated(reference.conv.weight, rank))
        reference.grouped.weight.copy_(_truncated(reference.grouped.weight, rank, groups=2))
        reference.proj.copy_(_truncated(reference.proj, rank, scale=scale))
        reference.fc.weight.copy_(_truncated(reference.fc.weight, rank))
    expected = reference(x).detach().numpy()
    by_op = {}
    for node in exported.graph.node:
        by_op.setdefault(node.op_type, []).append(node.output[0])
    matmul = by_op["MatMul"][0]
    bases = {name: Basis(rank) for name in _decomposable(exported) if name != matmul}
    bases[matmul] = Basis(rank, scale=np.linspace(0.5, 1.5, 12))
    decomposed = decompose_conv(exported, bases)
    onnx.checker.check_model(decomposed, full_check=True)
    assert_close(run_onnx(decomposed, x), expected, tol=1e-4)
    assert np.abs(run_onnx(exported, x) - expected).max() > 1e-2  # the truncation is visible


def test_order_chooses_the_bases(exported):
    """Keeping bases 1 and 2 (not the largest) is the weight with singular values 0 and 3+ removed."""
    conv = next(n.output[0] for n in exported.graph.node if n.op_type == "Conv")
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    reference = copy.deepcopy(_model())
    with torch.no_grad():
        w = reference.conv.weight
        u, s, vt = torch.linalg.svd(w.reshape(16, -1).double(), full_matrices=False)
        reference.conv.weight.copy_((u[:, 1:3] * s[1:3] @ vt[1:3]).reshape(w.shape).float())
    decomposed = decompose_conv(exported, {conv: Basis(2, order=np.array([2, 1, 0]))})
    assert_close(run_onnx(decomposed, x), reference(x).detach().numpy(), tol=1e-4)


def test_refuses_what_it_cannot_decompose(exported):
    relu = next(n.output[0] for n in exported.graph.node if n.op_type == "Relu")
    with pytest.raises(GraphoptError, match="no Conv, Gemm or MatMul"):
        decompose_conv(exported, {relu: Basis(2)})
    conv = next(n.output[0] for n in exported.graph.node if n.op_type == "Conv")
    with pytest.raises(GraphoptError, match="rank 0"):
        decompose_conv(exported, {conv: Basis(0)})
