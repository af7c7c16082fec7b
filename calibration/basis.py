"""Output bases found on data for the basis method: the principal directions of what each node computes on the
calibration images.

For y = M x, keeping r bases O_r of the output space leaves the error E‖(I − O_r O_rᵀ) M x‖², which the top r
eigenvectors of M Σ Mᵀ (Σ = E[x xᵀ] over input patches) make smallest: the decomposition is fitted to what the
network actually sees instead of to the weight alone (the SVD basis is that choice for white inputs).
"""
from __future__ import annotations

import numpy as np
import onnx
import torch

from graphopt.calibration.refit import patch_statistics


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
