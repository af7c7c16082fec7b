"""The one exception type users see: a clear sentence, never a traceback."""


class GraphoptError(Exception):
    """Bad input or an impossible request; the CLI prints it on one line and exits non-zero."""

    exit_code = 1


class TargetUnreachable(GraphoptError):
    """The requested latency target cannot be met by dropping the blocks available."""

    exit_code = 3


class AccuracyFloorMissed(TargetUnreachable):
    """The model that meets the goal loses more top-1 accuracy than the user allows (--max-accuracy-drop).

    `points` are what was measured on each side (graphopt/frontier.py: latency ratio, estimated loss); `best` is
    the fastest model inside the floor that can be handed back instead (INT8 alone, or the result with cuts given
    back), or None, and `best_point` its point; `kept` the path it was written to (--keep-best), or None."""

    def __init__(self, message: str, points: list, best=None, best_point=None, kept: str | None = None):
        super().__init__(message)
        self.points, self.best, self.best_point, self.kept = points, best, best_point, kept
        self.seconds: dict[str, float] = {}  # wall time per stage, and the budget's split, when the run got that far
        self.budget: dict = {}

    @property
    def best_label(self) -> str | None:
        """What the best model inside the floor is ("int8 alone", ...), or None."""
        return None if self.best_point is None else self.best_point.model

    @property
    def frontier(self) -> list[dict]:
        """The points as the report writes them."""
        return [point.to_dict() for point in self.points]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages), or its type name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
