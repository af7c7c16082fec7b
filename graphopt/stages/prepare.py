"""The run set up: the load and discover stages, then the latency backend that times every variant in the
precision it will be served in (and, for INT8 output, the original's INT8 form)."""
from __future__ import annotations

from graphopt.cluster import Cluster
from graphopt.methods import Planner
from graphopt.methods.blocks import block_actions
from graphopt.precision import Int8Timing, quantizes_graph, runtime_calibration
from graphopt.runtime import LatencyBackend, TimingSettings, get_backend
from graphopt.runtime.remote import RemoteTiming
from graphopt.settings import AccelerateSettings
from graphopt.stages.discover import discover
from graphopt.stages.load import load
from graphopt.stages.state import Run, StageClock, say


def prepare(model, example_input, calib, settings: AccelerateSettings, backend: LatencyBackend | None,
            quiet: bool, deadline: float) -> Run:
    """Everything the later stages share, with the time each setup stage took on the run's clock."""
    clock = StageClock()
    quantize = quantizes_graph(settings.runtime, settings.serving_precision)
    with clock("load"):
        loaded = load(model, example_input, calib, settings, quiet)
    timing = TimingSettings(settings.batch, settings.warmup, settings.repeats, settings.min_seconds,
                            input_shapes=loaded.input_shapes, noise_threshold=settings.noise_threshold,
                            max_seconds=settings.max_timing_seconds)
    backend = backend or get_backend(settings.runtime, timing, threads=settings.threads or None,
                                     precision=settings.serving_precision,
                                     calibration=runtime_calibration(settings.runtime, settings.serving_precision,
                                                                     loaded.calibration))
    # Dagger sizes its gates by the target before any table is timed: --target-ms over one measurement then
    found = discover(loaded, settings, clock, quantize,
                     lambda: settings.target_ratio(lambda: backend.measure(loaded.original).median_ms))
    int8 = None
    if quantize:
        from graphopt.calibration.quantize.static import quantize_int8
        with clock("quantize"):
            say(quiet, f"quantizing the original to INT8 on {len(loaded.train)} calibration images")
            int8 = quantize_int8(loaded.original, loaded.train)
        backend = Int8Timing(backend, loaded.train, loaded.original)
    cluster = Cluster(settings.ray) if settings.ray else None
    if cluster is not None and cluster.timing_slots:
        local = backend
        backend = RemoteTiming(cluster, lambda: local)  # built on each timing node as it is here
    planner = Planner(loaded.original, found.blocks, found.channels, found.orders, found.bases)
    given = block_actions(found.given) if found.given else None
    return Run(settings, loaded.original, loaded.calibration, loaded.train, loaded.held, found.blocks,
               found.droppable, found.channels, planner, found.actions, found.features, given, backend, int8, clock,
               quiet, deadline, found.methods, found.consumers, cluster)

