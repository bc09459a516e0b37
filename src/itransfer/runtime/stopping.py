"""Stop requests: SIGINT, SIGTERM and SIGUSR1 ask a long command to stop at a safe point.

A cluster scheduler sends SIGTERM before it preempts a job, and SLURM's ``--signal=USR1@120``
sends SIGUSR1 some time before the time limit. Neither should kill a run mid-write: the
handler only records the request, and the work loops (a training step, an evaluation cell,
a pipeline stage) look at it where stopping loses nothing, save, and raise
:class:`~itransfer.errors.StoppedBySignal`; the CLI then exits with 128 + the signal
(130, 143, 138). A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


@dataclass
class StopRequest:
    """The signal that asked this process to stop, once one has (``None`` until then)."""

    signal: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal or signal.SIGTERM).name


@contextmanager
def stop_requested_on_signal(request: StopRequest | None = None) -> Iterator[StopRequest]:
    """While inside, the stop signals set ``request.signal`` instead of ending the process.

    Given a request that an outer caller already watches (``itransfer run`` around its
    training stage), the handlers are not installed twice: the outer ones keep filling it.
    The previous handlers come back on exit.
    """
    if request is not None:
        yield request
        return
    request = StopRequest()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        request.signal = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous[signal.SIGINT])

    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): no graceful stop
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
        yield request
        return
    try:
        yield request
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
