"""Recovery in several processes with torch.distributed: DistributedDataParallel over the student, each process on
its own seeded share of augmented batches, so one step sees `processes` times the images.

The processes are started as `torchrun --standalone` starts them (torch.distributed's elastic launcher, c10d
rendezvous on a free local port): gloo on the CPU, NCCL with one GPU per process. Every process converts the same
models and computes the same held-out error on the same images, so early stopping, the time cap (agreed by an
all-reduce each step) and the learning-rate probes decide alike and every rank stops at the same step; rank 0
hands back the trained model. The ranks' trained weights are compared at the end: DDP keeps them equal, and a
difference is an error, not a silently different model.
"""
from __future__ import annotations

import os
import pickle
import uuid
from dataclasses import dataclass, replace

import onnx
import torch
import torch.distributed as dist

from graphopt.calibration.bridge.student import build_student
from graphopt.calibration.data.dataset import CalibrationSet
from graphopt.calibration.recovery.mimic import MimicSettings
from graphopt.errors import GraphoptError
from graphopt.machine import usable_cores
from graphopt.signals import handlers_kept


@dataclass
class _Job:
    """What every process needs to run recovery, as bytes and plain values (it crosses a process boundary)."""

    original: bytes
    pruned: bytes
    cuts: list[str]
    features: list[str]
    train: CalibrationSet
    held: torch.Tensor
    settings: MimicSettings
    threads: int | None
    quiet: bool
    lr_candidates: tuple[float, ...]
    logits: str | None


def recover_in_processes(processes: int, original: onnx.ModelProto, pruned: onnx.ModelProto, cuts: list[str],
                         features: list[str], train: CalibrationSet, held: torch.Tensor, settings: MimicSettings,
                         threads: int | None = None, quiet: bool = False, lr_candidates: tuple[float, ...] = (),
                         logits: str | None = None):
    """`recover` (calibration/recovery/recover.py) trained by `processes` processes on this machine; the same
    arguments, the same `Recovered` (its student rebuilt from the trained model)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from graphopt.calibration.recovery.recover import Recovered

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise GraphoptError(f"--recovery-processes {processes}: only {torch.cuda.device_count()} GPU(s) visible, "
                            "one per process")
    job = _Job(original.SerializeToString(), pruned.SerializeToString(), cuts, features, train, held, settings,
               threads, quiet, lr_candidates, logits)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"graphopt-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")
    try:
        with handlers_kept():  # the launcher installs its own SIGTERM handler here and leaves it
            answers = elastic_launch(config, _train)(pickle.dumps(job))
    except ChildFailedError as exc:
        raise GraphoptError(f"distributed recovery failed in a worker process: {exc.get_first_failure()[1]}") \
            from None
    if len({answer["checksum"] for answer in answers.values()}) != 1:
        raise GraphoptError("internal error: the recovery processes ended with different weights")
    first = answers[0]
    model = onnx.load_from_string(first["model"])
    outputs = [o.name for o in pruned.graph.output]
    student = build_student(model, first["cut"], [*features, *([logits] if logits else [])], extra_outputs=outputs)
    return Recovered(model, first["result"], student, first["lr"], processes)


def _train(payload: bytes) -> dict:
    """One process of the group: recovery on its own seed, DDP averaging the gradients (see `train_student`)."""
    from graphopt.calibration.recovery.recover import recover

    job: _Job = pickle.loads(payload)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank, size = dist.get_rank(), dist.get_world_size()
        threads = max(1, (job.threads or usable_cores()) // size)  # the work threads, shared between the processes
        torch.set_num_threads(threads)
        settings = replace(job.settings, seed=job.settings.seed + rank)  # each process its own augmented batches
        recovered = recover(onnx.load_from_string(job.original), onnx.load_from_string(job.pruned), job.cuts,
                            job.features, job.train, job.held, settings, threads, job.quiet or rank > 0,
                            job.lr_candidates, job.logits)
        answer = {"checksum": trained_checksum(recovered.model, recovered.student)}
        if rank == 0:
            from graphopt.verify import check_recovered
            # the write-back checked against the student that trained (the caller only gets the model back)
            check_recovered(onnx.load_from_string(job.original), recovered, job.held, threads)
            answer.update(model=recovered.model.SerializeToString(), result=recovered.result, lr=recovered.lr,
                          cut=recovered.student.cut)
        return answer
    finally:
        dist.destroy_process_group()


def trained_checksum(model: onnx.ModelProto, student) -> float:
    """A sum over every weight the student trained, as written back: equal on every rank when DDP kept them equal."""
    trained = student.feature_weights()
    return float(sum(onnx.numpy_helper.to_array(t).astype("float64").sum()
                     for t in model.graph.initializer if t.name in trained))
