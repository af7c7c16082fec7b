"""The settings of an accelerate run: one place for their defaults (the CLI and the API both read them)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from graphopt.bounds import check_range, check_threads
from graphopt.errors import GraphoptError
from graphopt.precision import QUANTIZING_RUNTIMES
from graphopt.runtime.base import TimingSettings


# recovery's Adam rates, each probed for a tenth of the steps (`choose_lr`): Lite0 wants 1e-4; on Lite2 with four
# blocks dropped neither 5e-4 nor 1e-4 ever beat the starting held-out error, where 3e-5 lowered it from 0.2103
# to 0.1930 in 60 steps (docs/studies/recovery_rates.md)
LR_CANDIDATES = (5e-4, 1e-4, 3e-5)
ADAPTOR_LR = 1e-3
SCORING_SHARE = 0.3  # of the time left when scoring starts; recovery gets the rest, less FINAL_RESERVE
FINAL_RESERVE = 0.15  # of the whole budget, kept for quantizing, verifying and timing the final model
RERANK_SLACK = 0.05  # cuts are re-ranked by plan error until predicted this far below the target
DAGGER_SHARE = 0.1  # of the whole budget, for training Dagger's channel gates when --importance dagger
IMPORTANCE = ("l1", "taylor", "dagger", "refit")  # channel importance criteria
SCORING = ("auto", "kl", "recoverability")  # how cuts are scored; auto: kl for models with class scores
KL_VIEWS = 3  # augmented views of each held-out image added to the images KL scoring measures on
MAX_BUDGET_MINUTES = 7 * 24 * 60.0  # a week: beyond it a budget is a typo, and its deadline would overflow
INT8_RECOVERY_SHARE = 0.4  # of the recovery time, for few-shot INT8 recovery after block recovery
# of the whole budget, kept for recovery when cuts are needed: the search (timing, plan scores) stops early rather
# than eat into it. Lite2 INT8 (issue 22): the latency table and scores took 391 s of 600, recovery 82 s
RECOVERY_SHARE = 0.5
# of the search's part of the budget, kept for timing cuts and re-ranking plans: scoring cuts stops at it (on Lite2
# scoring all 68 cuts by KL took minutes)
SEARCH_TIMING_SHARE = 0.4
# recovery steps below which a result is flagged as under-recovered (report `budget.note`, the floor's message)
USEFUL_RECOVERY_STEPS = 100


@dataclass
class AccelerateSettings:
    """Everything that shapes the result; recorded in the report."""

    target_latency: float | None = None  # ratio to the original's measured latency
    # points of top-1 the result may lose, judged by the held-out estimate's upper bound (graphopt/quality.py);
    # None: latency only. Measured on Lite0 and Lite2 (docs/studies/floor_lite*.md): the held-out estimate ranks
    # labelled losses with Spearman 0.83 and 0.80, 0.38 and 0.37 points off on average, and its bound decided 10 of
    # 12 models as labels do (the other two on the safe side)
    max_accuracy_drop: float | None = 1.0
    # when the result is over the floor: still exit 3, but write the fastest model inside it (INT8 alone) to -o
    keep_best: bool = False
    # images that judge the floor instead of the held-out calibration images (never trained or scored on): with
    # labels (class folders or eval_labels, index order from eval_classes) the top-1 loss is measured, without them
    # estimated on more images than the held-out few, so the bound is tighter
    eval_images: str | None = None
    eval_labels: str | None = None
    eval_classes: str | None = None
    target_ms: float | None = None
    drop: int | None = None
    blocks: list[str] | None = None  # drop exactly these (no recoverability scoring), then recover
    methods: list[str] | None = None  # kinds of cut to search (methods/registry.py names); None: the default ones
    # which channels a group gives up first: "refit" (those the least-squares refit of their consumers restores
    # best, chosen greedily), "taylor" (l1 for models without class scores), "l1" or "dagger". Measured, each group
    # cut to half and refit (docs/studies/importance_*.md): held-out feature error lowest with refit on 18 of 23
    # Lite0 and 9 of 11 Fashion-MNIST groups; test top-1 0.9217 refit, 0.9207 dagger, 0.9179 taylor, 0.9163 l1
    importance: str = "refit"
    # what a cut costs: "kl" (class scores' KL divergence from the original's, every cut measured without
    # training, plans re-measured together), "recoverability" (PRACTISE: held-out feature error after adaptor
    # training for blocks, after the refit for channel cuts), or "auto" (kl where the model has class scores)
    scoring: str = "auto"
    runtime: str = "onnxruntime"
    # Ray cluster address ("auto", "ray://HOST:PORT", or "local" for a cluster on this machine): cut scores run as
    # its tasks, and latency on its nodes that declare the graphopt_timing resource (graphopt/cluster.py)
    ray: str | None = None
    precision: str | None = None  # fp32, fp16 or int8; None: fp32 with a goal, else see `with_goal`
    batch: int = 1
    threads: int | None = None  # threads the runtime is timed with (the deployment's); None or 0: its default
    # threads for the work that is not timing: PyTorch training and scoring, onnxruntime's teacher, agreement and
    # floor passes. None or 0: every core this process may use. Apart from `threads` because timing wants the
    # deployment's setting (often 1) while training wants the machine: Lite0 recovery steps take 0.415 s on one
    # core of this 2-core machine (docs/studies/recovery_speed.md)
    work_threads: int | None = None
    warmup: int = TimingSettings.warmup
    repeats: int = TimingSettings.repeats
    min_seconds: float = TimingSettings.min_seconds
    noise_threshold: float = TimingSettings.noise_threshold  # ratios noisier than this are re-timed, then flagged
    max_timing_seconds: float = TimingSettings.max_seconds  # cap on the timed runs of one measurement
    input_shapes: dict[str, tuple[int, ...]] | None = None  # shapes of inputs with dynamic non-batch dimensions
    feature_tensor: str | None = None
    holdout: float = 0.2
    seed: int = 0
    time_budget: float = 10.0  # minutes for the whole run; scoring and recovery train within what timing leaves
    score_iterations: int = 60  # caps on training steps (expert overrides; the time budget usually ends them)
    recover_iterations: int = 250
    int8_recovery: bool = True  # with --precision int8: fine-tune weights through INT8 rounding before quantizing
    # processes recovery trains in on this machine (torch.distributed: gloo on the CPU, one GPU each with NCCL), each
    # on its own augmented batches: a step sees recovery_processes x batch_size images
    recovery_processes: int = 1
    match_logits: bool = False  # recovery also matches the original's class scores, not only its features
    lr: float | None = None  # recovery's Adam rate; None: probe LR_CANDIDATES and keep the best on held-out images
    batch_size: int = 16  # images per training step; cost follows images seen (batch x steps), measured
    preprocess: dict = field(default_factory=dict)  # size, norm, mean, std, bgr, resize
    cache_dir: str | None = None
    use_cache: bool = True

    @property
    def serving_precision(self) -> str:
        """The precision the result is served in: `precision`, or fp32 where it was left to `with_goal` and
        nothing resolved it (tools that drive the stages directly)."""
        return self.precision or "fp32"

    def target_ratio(self, original_ms: Callable[[], float]) -> float | None:
        """The latency goal as a ratio to the original: --target-latency, or --target-ms over the original's
        median (`original_ms()`, asked only then); None without a latency goal."""
        return self.target_latency if self.target_ms is None else self.target_ms / original_ms()

    def targets(self) -> int:
        return sum(v is not None for v in (self.target_latency, self.target_ms, self.drop, self.blocks))


def with_goal(settings: AccelerateSettings) -> AccelerateSettings:
    """The settings with a concrete precision. With no goal (no target, --drop or --blocks) the goal is the fastest
    model inside the accuracy floor: on onnxruntime's CPU that is INT8 alone when it keeps the floor (on labelled
    ImageNet photos Lite0's INT8 runs at 0.48 of the latency for 0.1 points, where FP32 cuts to 0.78 lost 2.3;
    docs/results_imagenet.md), so precision defaults to int8 there. Cuts on top of it wait for a search that
    weighs the floor; other runtimes need a goal for now."""
    if settings.targets() > 1:
        raise GraphoptError("give one of --target-latency, --target-ms, --drop or --blocks, not several")
    if settings.targets() == 1:
        return replace(settings, precision=settings.precision or "fp32")
    if settings.runtime not in QUANTIZING_RUNTIMES or settings.precision not in (None, "int8"):
        raise GraphoptError(f"give a goal (--target-latency, --target-ms, --drop or --blocks) for --runtime "
                            f"{settings.runtime} --precision {settings.precision or 'fp32'}: without one, graphopt "
                            f"looks for the fastest model inside the accuracy floor, which it does with INT8 on "
                            f"onnxruntime's CPU only")
    if settings.max_accuracy_drop is None:
        raise GraphoptError("without a goal, graphopt looks for the fastest model inside the accuracy floor: give "
                            "--max-accuracy-drop POINTS or a goal")
    return replace(settings, precision="int8")


def _check_eval(settings: AccelerateSettings) -> None:
    """--eval names a folder, and its labels and classes files exist, before any work (labels are checked against
    the model when the floor is judged)."""
    from pathlib import Path
    if settings.eval_images is None:
        if settings.eval_labels is not None or settings.eval_classes is not None:
            raise GraphoptError("--eval-labels and --eval-classes describe the --eval images: give --eval DIR")
        return
    if not Path(settings.eval_images).is_dir():
        raise GraphoptError(f"--eval {settings.eval_images}: not a folder of images")
    for option, path in (("--eval-labels", settings.eval_labels), ("--eval-classes", settings.eval_classes)):
        if path is not None and not Path(path).is_file():
            raise GraphoptError(f"{option} {path}: no such file")


def check_settings(settings: AccelerateSettings) -> None:
    """Every setting checked before any work, with the option's name and unit in the message."""
    if settings.target_latency is not None and not 0 < settings.target_latency < 1:
        raise GraphoptError(f"--target-latency is a ratio to the original's latency, between 0 and 1 "
                            f"(got {settings.target_latency})")
    if settings.target_ms is not None:
        check_range("--target-ms", settings.target_ms, "number of milliseconds", 0, low_open=True)
    if settings.drop is not None and settings.drop < 1:
        raise GraphoptError(f"--drop must be at least 1 (got {settings.drop})")
    for name in ("score_iterations", "recover_iterations", "batch_size", "recovery_processes"):
        if getattr(settings, name) < 1:
            raise GraphoptError(f"--{name.replace('_', '-')} must be at least 1")
    check_threads(settings.threads)
    check_threads(settings.work_threads, "--work-threads")
    if settings.seed < 0:
        raise GraphoptError(f"--seed must be 0 or more (got {settings.seed})")
    TimingSettings(settings.batch, settings.warmup, settings.repeats, settings.min_seconds,
                   noise_threshold=settings.noise_threshold, max_seconds=settings.max_timing_seconds).check()
    check_range("--holdout", settings.holdout, "share of the calibration files", 0, 1, low_open=True, high_open=True)
    if settings.max_accuracy_drop is not None:
        check_range("--max-accuracy-drop", settings.max_accuracy_drop, "number of top-1 points", 0, 100)
    _check_eval(settings)
    check_range("--time-budget", settings.time_budget, "number of minutes", 0, MAX_BUDGET_MINUTES, low_open=True)
    if settings.lr is not None:
        check_range("--lr", settings.lr, "learning rate", 0, 1, low_open=True)
    if settings.scoring not in SCORING:
        raise GraphoptError(f"--scoring must be one of {', '.join(SCORING)} (got {settings.scoring})")
    if settings.importance not in IMPORTANCE:
        raise GraphoptError(f"--importance must be one of {', '.join(IMPORTANCE)} (got {settings.importance})")
