"""What a method is: one kind of cut, as every stage of the search sees it.

A method finds its candidate cuts on the graph (`discover`), names them (`label`), says which nodes each changes
(`first_nodes`, `removes`) so a plan can hold one level per target and recovery knows where to start, and adds the
passes that make a plan's cuts (`build`). Selection, the latency table, scoring, the report and recovery only see
actions and ask the registry for the method of each (methods/registry.py): a new kind of cut is a subclass of
`Method` in a module of its own and one line in the registry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import onnx

from graphopt.methods.action import Action

if TYPE_CHECKING:
    from graphopt.blocks import Block
    from graphopt.channels import ChannelAnalysis
    from graphopt.methods.plan import Planner
    from graphopt.passes import Basis
    from graphopt.settings import AccelerateSettings
    from graphopt.shapes import Shape

Refit = Callable[[onnx.ModelProto, dict[str, np.ndarray]], onnx.ModelProto]


@dataclass
class Discovery:
    """What methods read when they look for cuts, and what they leave for applying and scoring them later.

    Read: the model, its inferred shapes, its residual blocks, the feature tensors recovery matches, the run's
    settings, the training images, the stage clock and the latency target as a ratio (--target-ms measured). Left: the channel analysis, each prunable group's channel
    order and its consumers' input statistics (filters), the fitted bases of the nodes the basis method may split."""

    model: onnx.ModelProto
    shapes: dict[str, "Shape | None"]
    blocks: list["Block"]
    features: list[str]
    settings: "AccelerateSettings"
    train: Any  # CalibrationSet of the training images
    clock: Callable[[str], Any]
    target: Callable[[], float | None] = lambda: None  # the latency target as a ratio (timed on first call)
    channels: "ChannelAnalysis | None" = None
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    consumers: dict | None = None
    bases: dict[str, "Basis"] = field(default_factory=dict)


@dataclass
class Build:
    """A plan being turned into passes: the model the passes will run on (a method may replace it, as the refit of
    pruned consumers does) and the passes so far, in the order methods apply (`Method.applies_at`)."""

    model: onnx.ModelProto
    plan: list[Action]
    refit: Refit | None
    passes: list = field(default_factory=list)


class Method:
    """One kind of cut. Subclasses set the class attributes and override `discover` and `build`; the defaults
    suit a cut that changes one node or group in place at a level (`keep`)."""

    name: ClassVar[str]  # as --methods and the report spell it
    summary: ClassVar[str]  # what it does, for --methods' help
    lacking: ClassVar[str]  # what a model where it finds nothing has none of
    counted: ClassVar[str]  # its candidates, counted ("droppable blocks")
    at_limit: ClassVar[str]  # its cuts in a plan that takes all of them ("blocks dropped")
    applies_at: ClassVar[int]  # where its passes go among a plan's (earlier passes see the graph less changed)
    default: ClassVar[bool] = False  # searched without --methods
    scored_with_adaptors: ClassVar[bool] = False  # recoverability scores it after adaptor training (PRACTISE)

    def discover(self, found: Discovery) -> list[Action]:
        """Every candidate cut on the model, at each level offered."""
        raise NotImplementedError

    def build(self, planner: "Planner", build: Build, mine: list[Action]) -> None:
        """Add the passes (or the model change) that make `mine`, this method's cuts of `build.plan`."""
        raise NotImplementedError

    def label(self, action: Action) -> str:
        """The cut's id in tables and reports: its target at its level."""
        return f"{action.target}@{action.keep}"

    def first_nodes(self, planner: "Planner", action: Action) -> set[str]:
        """Labels of the nodes the cut changes first (where recovery's student may start)."""
        return {planner.labels[action.target]}

    def removes(self, planner: "Planner", action: Action) -> set[str]:
        """Labels of the nodes the cut removes whole: a cut made only inside them goes from a plan that has it."""
        return set()

    def start(self, planner: "Planner", action: Action, index: dict[str, int]) -> tuple[int, str]:
        """(index of the first node the cut changes, the tensor that node reads)."""
        first = min(index[label] for label in self.first_nodes(planner, action))
        return first, planner.model.graph.node[first].input[0]

    def canonical(self, planner: "Planner", action: Action) -> Action:
        """The action as a plan holds it."""
        return action

    def plan_order(self, planner: "Planner", action: Action) -> Any:
        """Where the cut goes among this method's cuts in a plan."""
        return action.target
