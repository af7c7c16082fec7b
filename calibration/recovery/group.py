"""What a training loop needs to know when it runs as one process of a torch.distributed group: whether it does,
flags agreed across the group, and the student's forward through DistributedDataParallel."""
from __future__ import annotations

import torch
import torch.distributed as dist


def in_group() -> bool:
    """Whether this process trains as one of a torch.distributed group."""
    return dist.is_available() and dist.is_initialized()


def any_rank(flag: bool) -> bool:
    """`flag` agreed across the group: true when any process raised it (so every rank stops at the same step)."""
    if not in_group():
        return flag
    value = torch.tensor([int(flag)], device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def data_parallel(student):
    """The student's forward through DistributedDataParallel, which averages the trained weights' gradients over
    the group in backward."""
    from torch.nn.parallel import DistributedDataParallel
    module = DistributedDataParallel(student.graph.module)
    return lambda inputs: student.forward(inputs, module)
