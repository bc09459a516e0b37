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


# What the collective backends say when a process of the run is gone (killed, its node lost):
# gloo's TCP pairs and NCCL's watchdog. The surviving processes' own state is intact.
LOST_PEER_MESSAGES = ("Connection closed by peer", "Connection reset by peer",
                      "NCCL communicator was aborted", "Broken pipe")
LOST_PEER_EXIT_STATUS = 3


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the run stopped."""
    return isinstance(exc, RuntimeError) and any(message in str(exc)
                                                 for message in LOST_PEER_MESSAGES)


def lost_peer_message(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ("another process of this run stopped or became unreachable (its node failed or was "
            f"killed; the backend says: {first_line}). Results and resumable checkpoints "
            "written so far are intact: run the same command again on every node (itransfer "
            "train: with --resume) to continue.")
