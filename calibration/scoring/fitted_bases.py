"""Output bases found on data for the basis method: the principal directions of what each node computes on the
calibration images.

For y = M x, keeping r bases O_r of the output space leaves the error E‖(I − O_r O_rᵀ) M x‖², which the top r
eigenvectors of M Σ Mᵀ (Σ = E[x xᵀ] over input patches) make smallest: the decomposition is fitted to what the
network actually sees instead of to the weight alone (the SVD basis is that choice for white inputs).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import torch

from graphopt.calibration.scoring.refit import patch_statistics
from graphopt.calibration.scoring.taylor import taylor_order
from graphopt.channels import find_channel_groups
from graphopt.passes import FULL_RANK, Basis, decompose_conv
from graphopt.passes.decompose_conv import head_name
from graphopt.shapes import infer_shapes


def output_bases(original: onnx.ModelProto, names: list[str], images: torch.Tensor, threads: int | None = None,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """{node output: orthonormal output basis as columns, largest output energy first} for each node named whose
    weight supports it (group 1, constant weight); the others are left to their weight's SVD."""
    bases = {}
    for name, consumer in patch_statistics(original, names, images, threads, seed).items():
        entries = consumer.weight.shape[1]
        energy = consumer.weight @ consumer.sigma[:entries, :entries] @ consumer.weight.T
        values, vectors = np.linalg.eigh((energy + energy.T) / 2)
        bases[name] = vectors[:, np.argsort(values)[::-1]]
    return bases


def basis_order(original: onnx.ModelProto, bases: dict[str, Basis], logits: str,
                images: torch.Tensor) -> dict[str, np.ndarray]:
    """{node output: its bases (columns of its output basis) most important first} by first-order Taylor on
    per-basis scaling factors: every node in `bases` is split at full rank (the same function), each basis scaled by
    a factor of one, and a basis matters as much as the squared gradient of the pseudo-label loss says its factor
    does (Basis Scaling's importance at unit scales, arXiv 2108.02893)."""
    full = decompose_conv(original, {name: replace(basis, rank=FULL_RANK) for name, basis in bases.items()})
    analysis = find_channel_groups(full, infer_shapes(full))
    labels = {node.output[0]: node.name for node in original.graph.node if node.output}
    heads = {head_name(labels[name], name): name for name in bases}
    orders = taylor_order(full, analysis, logits, images)
    return {heads[group.producers[0]]: orders[group.id] for group in analysis.prunable
            if len(group.producers) == 1 and group.producers[0] in heads}


def fitted_bases(original: onnx.ModelProto, names: list[str], images: torch.Tensor, logits: str | None = None,
                 threads: int | None = None, seed: int = 0) -> dict[str, Basis]:
    """How the basis method splits each named node (the rank is left to each action): the output basis fitted on
    `images` where the node allows it, and with `logits` (class scores), bases given up in Taylor order."""
    outputs = output_bases(original, names, images, threads, seed)
    bases = {name: Basis(FULL_RANK, outputs=outputs.get(name)) for name in names}
    if logits is None:
        return bases
    orders = basis_order(original, bases, logits, images)
    return {name: replace(basis, order=orders.get(name)) for name, basis in bases.items()}
