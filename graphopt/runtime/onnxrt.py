"""onnxruntime latency backend: CPU by default, the CUDA execution provider when asked for and present."""
from __future__ import annotations

import time

import onnx
import onnxruntime as ort

from graphopt.errors import GraphoptError, first_line
from graphopt.runtime.base import LatencyBackend, Runner, TimingSettings
from graphopt.runtime.inputs import random_inputs

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def make_session(model: onnx.ModelProto, threads: int | None = None, provider: str = "cpu",
                 spin: bool = True) -> ort.InferenceSession:
    """An inference session with full graph optimisation, as a deployment would use.

    `spin=False` stops idle worker threads from busy-waiting after a run: sessions timed in turn then do not
    steal the cores from each other (measured on 2 cores: ratios that swung 0.37-0.66 repeat within 0.3%).
    """
    wanted = PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        available = ", ".join(ort.get_available_providers())
        raise GraphoptError(f"onnxruntime here has no {wanted} (available: {available}); "
                            f"install onnxruntime-gpu for CUDA")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = [wanted] if provider == "cpu" else [wanted, "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise GraphoptError(f"onnxruntime cannot load the model: {first_line(exc)}") from None


class _OrtRunner(Runner):
    def __init__(self, session: ort.InferenceSession, feeds: dict):
        self.session = session
        self.feeds = feeds

    def run_ms(self) -> float:
        start = time.perf_counter()
        self.session.run(None, self.feeds)
        return (time.perf_counter() - start) * 1000.0


class OnnxRuntimeBackend(LatencyBackend):
    """Wall-clock latency of `InferenceSession.run` on the chosen execution provider."""

    def __init__(self, settings: TimingSettings | None = None, threads: int | None = None, provider: str = "cpu"):
        super().__init__(settings)
        self.threads = threads
        self.provider = provider
        self.name = f"onnxruntime-{provider}"

    def load(self, model: onnx.ModelProto) -> Runner:
        session = make_session(model, self.threads, self.provider, spin=False)
        feeds = random_inputs(model, self.settings.batch, self.settings.input_shapes)
        return _OrtRunner(session, feeds)

    def describe(self) -> dict:
        return {**super().describe(), "threads": self.threads or "default", "spinning": False,
                "onnxruntime": ort.__version__}
