"""CPU threads for torch: one global setting (``mirage --threads N`` / ``MIRAGE_THREADS``).

torch starts with one intra-op thread per logical core. On a machine where anything else runs
(other jobs, a second mirage), its OpenMP threads then wait on each other at every parallel
region and a run gets several times slower -- measured on a shared 2-core machine: the preview
example took 40 s with 2 threads and 17 s with 1 under load 4, with byte-identical output (see the
thread table in docs/performance.md, produced by ``python -m mirage_cli.bench.threads``). The default is
therefore a cap (:func:`default_threads`), applied by the CLI's root callback as torch is imported, before any
torch work, and recorded in ``run.json`` and bench reports.

The thread count never changes the output of mirage: every reduction the memory and the preview
make is deterministic (scatter-min, fixed-order sums), so it is allowed with ``--resume``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from .errors import MirageError

ENV_VAR = "MIRAGE_THREADS"
MAX_THREADS = 256


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where the OS has none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def physical_cores() -> int:
    """Physical cores (distinct ``(physical id, core id)`` pairs in /proc/cpuinfo), so hyper-threads
    are not counted twice; the logical CPU count where that file is missing or unreadable."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return max(1, os.cpu_count() or 1)
    cores, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The default cap: physical cores, never more than the affinity mask allows (hyper-threads and
    masked-out CPUs only add contention). Memory-bound commands lower it further, see
    :data:`LIGHT_WORK_THREADS`; ``--threads 1`` is the advice for any busy machine.
    """
    return max(1, min(physical_cores(), usable_cpus()))


LIGHT_WORK_THREADS = 1
"""Default for memory-bound work (the preview backend, ``bench --memory-only``): measured, one
thread is never much slower there on an idle 2-core machine and 6x-60x faster on a busy one."""


def apply_light_default(given: int | None) -> int:
    """Called by commands doing memory-bound work: ``LIGHT_WORK_THREADS`` unless the user chose a
    count (``given``: the parsed ``--threads`` / ``MIRAGE_THREADS``). Returns the count in use."""
    return apply_threads(LIGHT_WORK_THREADS) if given is None else current_threads()


def worker_threads(workers: int, given: int | None = None, cpus: int | None = None) -> int:
    """Threads for each of ``workers`` processes sharing this machine: the user's ``--threads``
    (``given``) as is, else an equal share of the usable cores (``cpus``, default
    :func:`usable_cpus`), at least 1. Why: N processes each starting one thread per core
    oversubscribe the cores N times (measured: 2 workers on 2 cores ran slower than 1)."""
    if given is not None:
        return given
    return max(1, (usable_cpus() if cpus is None else int(cpus)) // max(1, workers))


def given_threads(ctx) -> int | None:
    """The ``--threads`` / ``MIRAGE_THREADS`` value the root command parsed (None: not given)."""
    root = ctx.find_root()
    return parse_threads(root.params.get("threads"))


def parse_threads(value: str | int | None) -> int | None:
    """``--threads`` / ``MIRAGE_THREADS`` as an int in ``[1, MAX_THREADS]`` (None: not given).
    Raises MirageError naming the option on anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise MirageError(f"--threads / {ENV_VAR}: must be an integer between 1 and {MAX_THREADS} (got '{value}')")
    return n


def apply_threads(n: int | None) -> int:
    """Set torch's intra-op threads to ``n`` (None: :func:`default_threads`); returns the count used.

    Inter-op threads are set to the same cap once (torch only allows that before its first parallel
    work; later calls keep what was set).
    """
    import torch

    n = default_threads() if n is None else int(n)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already started (a second call in one process, e.g. the tests): keep it
        pass
    return torch.get_num_threads()


class _AfterTorchImport:
    """A meta path finder that runs ``apply_threads(n)`` the moment torch finishes importing
    (then removes itself), so that the CLI applies ``--threads`` before any torch work without
    paying torch's import (seconds) for commands that never need it, or that stop at a bad option."""

    def __init__(self, n: int | None):
        self.n = n

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        _remove_hooks()  # the search below must not find this finder again
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        load, n = spec.loader.exec_module, self.n

        def exec_module(module):
            load(module)
            apply_threads(n)  # torch is whole now; nothing has run on it yet

        spec.loader.exec_module = exec_module
        return spec


def _remove_hooks() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterTorchImport)]


def apply_threads_on_import(n: int | None) -> None:
    """:func:`apply_threads` now if torch is imported already, else as soon as it is."""
    _remove_hooks()  # a later call (tests run main() many times in one process) replaces an earlier one
    if "torch" in sys.modules:
        apply_threads(n)
    else:
        sys.meta_path.insert(0, _AfterTorchImport(n))


def current_threads() -> int:
    """torch's intra-op thread count now (what run.json and bench reports record)."""
    import torch

    return torch.get_num_threads()
