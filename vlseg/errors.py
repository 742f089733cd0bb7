"""Errors a user can act on. The CLI and app print their message on one line, no traceback."""


class VlsegError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(VlsegError, ValueError):
    """Bad input (a scan, a label file, a query): the message names the file and what to do."""

    def __init__(self, problem: str, path: str | None = None) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ModelError(VlsegError):
    """A checkpoint or model config that cannot be used."""
