"""The one user-facing error type.

Anything the user can cause (a missing file, a malformed trajectory, a corrupt cache, an unknown
model) raises :class:`MirageError` with one line that names the file, the frame/field and the
problem. The CLI prints that line and exits with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class MirageError(Exception):
    """A bad input or an unmet precondition, explained in one line for the user."""

    exit_code = 2


def write_failure_reason(e: BaseException) -> str | None:
    """The OS reason of a failed write (``No space left on device``...), or None when ``e`` is not
    an I/O failure. Writers wrap OS errors differently: Python raises OSError, safetensors a
    SafetensorError whose text holds the OS message, ffmpeg (imageio) a broken pipe or an OSError
    carrying ffmpeg's output."""
    text = str(e)  # first: a broken pipe to ffmpeg carries ffmpeg's own (real) reason in its text
    for reason in ("No space left on device", "Read-only file system", "Operation not permitted", "Permission denied",
                   "Disk quota exceeded", "Input/output error"):
        if reason in text:
            return reason
    if isinstance(e, OSError):
        return e.strerror or text
    return None


def allocation_failure(e: BaseException) -> bool:
    """True for an out-of-memory error from Python or torch (CPU allocator or CUDA)."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in (
        "out of memory", "can't allocate memory", "not enough memory", "DefaultCPUAllocator"))
