"""What a reader needs to judge a measurement: the machine and the library versions, for reports and result files."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else whatever the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def machine() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable_cores(), "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    """Versions of the libraries that shape graphopt's results."""
    from importlib.metadata import PackageNotFoundError, version
    found = {}
    for package in ("graphopt", "onnx", "onnxruntime", "onnx2torch", "onnx-graphsurgeon", "torch", "torchvision",
                    "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
