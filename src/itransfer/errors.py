"""User-facing errors.

Every error a user can cause by bad input derives from :class:`ITransferError`; the CLI prints
its message on one line (no traceback unless ``--debug``) and exits with status 2. Messages name
the offending file and field so the user can fix the input without reading code.
"""

from __future__ import annotations

from pathlib import Path


class ITransferError(Exception):
    """Base class of errors caused by the user's input or environment, not by a bug."""


class ConfigError(ITransferError):
    """A config file or override has an unknown key or a bad value."""


class DataError(ITransferError):
    """A data file (SNI task, corpus, predictions, references) is malformed."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple:
        # Raised in worker processes (the tokenized cache's parallel build) and pickled back.
        return (_data_error, (self.path, self.message, self.line))


def _data_error(path: Path, message: str, line: int | None) -> DataError:
    return DataError(path, message, line=line)


class StoppedBySignal(KeyboardInterrupt):
    """A command stopped cleanly on SIGINT, SIGTERM or SIGUSR1, its work so far saved.

    A KeyboardInterrupt, so code that lets Ctrl-C through lets it through too; the CLI exits
    with 128 + ``signal_number``, as a shell reports a process the signal ended.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class TrainingStopped(StoppedBySignal):
    """Training stopped at a step boundary after saving a resumable checkpoint."""
