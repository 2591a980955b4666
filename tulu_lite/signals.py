"""Termination signals unwind the program like Ctrl-C, so nothing half-written is left behind.

SIGTERM is what SLURM preemption, ``docker stop`` and Kubernetes send, SIGHUP what a closed terminal sends; by
default either kills Python on the spot, leaving the hidden temporaries of `tulu_lite.outputs` until the same target
is written again. `handle_termination` (installed by the CLI for every command) turns them into `Terminated`, a
`KeyboardInterrupt`, so everything that cleans up after Ctrl-C (the atomic writers, libraries) cleans up after them
too; the command then exits with 128 + the signal number, as a killed process would.

A command that handles a signal itself (training checkpoints on SIGTERM) installs its own handler with
`signal.signal` for as long as it needs it and restores the previous one afterwards: this one is only the default.
"""

from __future__ import annotations

import os
import signal
import threading


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM or SIGHUP: unwinding, as after Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def handle_termination() -> None:
    """From now on SIGTERM and SIGHUP raise `Terminated` in this process (main thread only; elsewhere a no-op).

    A repeated signal while unwinding is ignored, so the cleanup it started can finish (whoever sent it escalates
    to SIGKILL when it must). A forked child (a datasets or multiprocessing worker) inherits the handler but gets
    the default action: its pool terminates it with SIGTERM on every normal shutdown.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for other in TERMINATION_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise Terminated(signum)

    for signum in TERMINATION_SIGNALS:
        signal.signal(signum, on_signal)
