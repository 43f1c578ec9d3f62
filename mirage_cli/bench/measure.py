"""Measurement: wall time of torch work, peak bytes of live tensors, bytes a memory holds, the machine.

Timing uses :mod:`torch.utils.benchmark`: its clock synchronises the accelerator, and
:class:`~torch.utils.benchmark.Timer` repeats an operation until its median is stable. Every
timer runs with the process's torch thread count (``Timer`` would default to one thread, which is
not how ``mirage`` runs).
"""

from __future__ import annotations

import os
import platform
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.benchmark import Timer, timer

from .. import __version__

T = TypeVar("T")
M = TypeVar("M")

#: Budget of a repeated measurement (seconds of measured runs) and its most samples.
BUDGET_S = 0.5
MAX_SAMPLES = 5


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), seconds)`` of one call (accelerator synchronised before and after)."""
    start = timer()
    out = fn()
    return out, timer() - start


def timed_median(fn: Callable[[], T], budget_s: float = BUDGET_S) -> tuple[T, float]:
    """``(fn(), median seconds per call)``: one untimed call gives the result (and warms up), then
    :meth:`Timer.adaptive_autorange` repeats ``fn`` within ``budget_s``. ``fn`` must not mutate state."""
    out = fn()
    t = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = t.adaptive_autorange(threshold=0.1, min_run_time=min(0.01, budget_s), max_run_time=budget_s)
    return out, float(m.median)


def timed_update(memory: M, clone: Callable[[M], M], update: Callable[[M], object],
                 budget_s: float = BUDGET_S, max_samples: int = MAX_SAMPLES) -> tuple[M, float]:
    """Median seconds of ``update(copy)`` on fresh copies ``clone(memory)`` (copies made untimed: the
    Timer's ``setup``), sampled until ``budget_s`` or ``max_samples``; returns ``(updated copy, median)``.

    Each sample is one call on its own copy, since an update must not apply twice to one memory.
    """
    result = clone(memory)
    update(result)  # the copy the caller keeps; also the warm-up
    t = Timer(stmt="update(m)", setup="m = clone(memory)", num_threads=torch.get_num_threads(),
              globals={"update": update, "clone": clone, "memory": memory})
    times: list[float] = []
    while len(times) < max_samples and sum(times) < budget_s:
        times.append(t.timeit(number=1).median)
    times.sort()
    mid = len(times) // 2
    return result, float(times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2)


class TensorPeak:
    """Peak bytes of live tensors created by torch ops inside ``with`` (a ``TorchDispatchMode``).

    Every tensor an op returns is counted once per storage until the last tensor viewing that
    storage is garbage-collected; views of tensors made outside the block are not counted. Works on
    any device; scratch memory that a kernel allocates and frees internally is not visible.
    """

    def __init__(self) -> None:
        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                ins = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        meter._track(t, ins)
                return out

        self._mode = _Mode()
        self.live: dict[int, list[int]] = {}  # storage pointer -> [tensors alive, bytes]
        self.current = 0
        self.peak = 0

    def _track(self, t: torch.Tensor, inputs: set[int]) -> None:
        if t.device.type == "meta":
            return
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr == 0:
            return
        entry = self.live.get(ptr)
        if entry is None:
            if ptr in inputs:  # a view of something made before the block
                return
            entry = self.live[ptr] = [0, st.nbytes()]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] <= 0:
            self.current -= entry[1]
            del self.live[ptr]

    def __enter__(self) -> TensorPeak:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def measure_peak(fn: Callable[[], object]) -> int:
    """Run ``fn()`` under :class:`TensorPeak`; return the peak transient bytes (results are dropped)."""
    with TensorPeak() as meter:
        out = fn()
        del out
    return int(meter.peak)


def held_bytes(memory) -> int:
    """Bytes of every tensor a memory object holds (its payload, derived keys, caches, nested memories)."""
    seen: set[int] = set()

    def walk(x, depth: int = 0) -> int:
        if isinstance(x, torch.Tensor):
            st = x.untyped_storage()
            if st.data_ptr() in seen:
                return 0
            seen.add(st.data_ptr())
            return st.nbytes()
        if isinstance(x, (tuple, list)):
            return sum(walk(v, depth) for v in x)
        if depth < 2 and hasattr(x, "__dict__") and type(x).__module__.startswith("mirage_cli.memory"):
            return sum(walk(v, depth + 1) for v in vars(x).values())
        return 0

    return walk(memory)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """Where the numbers were measured."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "mirage": __version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load average (``None`` where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None
