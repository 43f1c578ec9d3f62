"""The one user-facing error type.

Anything the user can cause (a missing file, a malformed trajectory, a corrupt cache, an unknown
model) raises :class:`MirageError` with one line that names the file, the frame/field and the
problem. The CLI prints that line and exits with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class MirageError(Exception):
    """A bad input or an unmet precondition, explained in one line for the user."""

    exit_code = 2
