"""Independent jobs of the search on a Ray cluster (`--ray ADDRESS`, or `auto`): cut scores spread over its CPUs,
latency tables timed on the nodes that serve the model, several interleaved runs at once.

Ray is the engine (tasks, the object store, scheduling by resources); graphopt only says what is a task. A node
that may time latency declares the custom resource `graphopt_timing` (one per node: `ray start
--resources='{"graphopt_timing": 1}'`), so a timing task has its node to itself, as it would run in deployment;
scoring tasks ask for CPUs only. Without nodes that declare it, latency is timed here, one run at a time.
`ray.init()` with no address starts a local cluster on this machine, which is also how the tests run it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from graphopt.errors import GraphoptError
from graphopt.signals import handlers_kept

TIMING_RESOURCE = "graphopt_timing"


class Cluster:
    """A connection to a Ray cluster: `map` runs a function over items as tasks; `timing_slots` is how many
    nodes may time latency at once."""

    def __init__(self, address: str | None):
        try:
            import ray
        except ImportError:
            raise GraphoptError("--ray needs Ray: pip install 'graphopt[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            with handlers_kept():  # ray.init installs its own SIGTERM handler in the driver
                try:
                    ray.init(address=None if address in (None, "local") else address, include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise GraphoptError(f"--ray {address}: cannot connect to the Ray cluster ({exc})") from None

    @property
    def timing_slots(self) -> int:
        """Nodes that declared the timing resource (0: latency is timed on this machine)."""
        return int(self.ray.cluster_resources().get(TIMING_RESOURCE, 0))

    @property
    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def map(self, function: Callable, shared: Any, items: Iterable, timing: bool = False) -> list:
        """`function(shared, item)` for each item as Ray tasks, results in the items' order. `shared` goes into
        the object store once; timing tasks each take a node's timing resource."""
        remote = self.ray.remote(function).options(
            num_cpus=1, resources={TIMING_RESOURCE: 1} if timing else None, max_retries=0)
        reference = self.ray.put(shared)
        try:
            return self.ray.get([remote.remote(reference, item) for item in items])
        except self.ray.exceptions.RayTaskError as exc:
            raise GraphoptError(f"a Ray task failed: {exc.cause if exc.cause is not None else exc}") from None

    def describe(self) -> dict:
        return {"engine": f"ray {self.ray.__version__}", "cpus": self.cpus, "timing_nodes": self.timing_slots}
