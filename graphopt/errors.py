"""The one exception type users see: a clear sentence, never a traceback."""


class GraphoptError(Exception):
    """Bad input or an impossible request; the CLI prints it on one line and exits non-zero."""

    exit_code = 1


class TargetUnreachable(GraphoptError):
    """The requested latency target cannot be met by dropping the blocks available."""

    exit_code = 3


class AccuracyFloorMissed(TargetUnreachable):
    """The model that meets the goal loses more top-1 accuracy than the user allows (--max-accuracy-drop); `frontier`
    holds what was measured on each side (latency ratio, estimated loss) for the report."""

    def __init__(self, message: str, frontier: list[dict]):
        super().__init__(message)
        self.frontier = frontier


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages), or its type name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
