"""Ctrl-C that cannot be lost: :func:`sticky_interrupts` and its checkpoint :func:`raise_if_interrupted`.

Kept apart from ``io.py`` so the CLI can install it before anything heavy (torch) is imported.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# SIGINTs received inside :func:`sticky_interrupts` (see there).
_INTERRUPTS: list[int] = []


def _record(signum, frame):
    _INTERRUPTS.append(signum)
    raise KeyboardInterrupt


def record_interrupts() -> None:
    """From now on, record every SIGINT (then raise KeyboardInterrupt as Python's default handler
    does). Installed when the CLI is imported, so that a Ctrl-C swallowed while torch loads is
    still seen by :func:`raise_if_interrupted`. Only over Python's default handler, main thread."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _record)


@contextmanager
def sticky_interrupts() -> Iterator[None]:
    """Make Ctrl-C (SIGINT) impossible to lose for the block: each one is recorded, then raised as
    usual (KeyboardInterrupt); :func:`raise_if_interrupted` raises it again at a checkpoint (one
    recorded before the block, see :func:`record_interrupts`, counts too). The record is cleared
    when the block ends.

    Why: a KeyboardInterrupt that lands in a ``__del__``, a callback or a library's bare ``except:``
    (model and codec loading run plenty) is swallowed, and a run that was told to stop went on to
    finish (and replace the run its ``--overwrite`` had moved aside). A no-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        _INTERRUPTS.clear()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived inside :func:`sticky_interrupts` (even one that
    something swallowed); a no-op otherwise."""
    if _INTERRUPTS:
        raise KeyboardInterrupt
