"""The one exception type users see: a clear sentence, never a traceback."""


class GraphoptError(Exception):
    """Bad input or an impossible request; the CLI prints it on one line and exits non-zero."""

    exit_code = 1


class TargetUnreachable(GraphoptError):
    """The requested latency target cannot be met by dropping the blocks available."""

    exit_code = 3
