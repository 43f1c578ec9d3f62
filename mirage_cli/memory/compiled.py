"""The optional compiled splat (``splat_ext.cpp``), built at first use with ``torch.utils.cpp_extension``.

It is the CPU twin of :func:`mirage_cli.memory.splat.splat_patches`: the same fp32 operations in the
same order (built with ``-ffp-contract=off``, so no fused multiply-add changes a rounding), the same
footprints and the same deterministic z-buffer, so it returns the same bits (tests compare both;
``-fno-math-errno`` only drops ``errno`` for ``sqrt``, whose result is exact either way, and lets the
projection loop be vectorised). It needs a C++ compiler at run time; without one, or with ``MIRAGE_COMPILED_SPLAT=0``, or on CUDA,
the pure-torch path runs.

Builds. The first choice is a build for this CPU (``-march=native``: the projection pass runs in the
widest vectors the CPU has); where the compiler refuses that flag, or with
``MIRAGE_COMPILED_SPLAT=portable``, a portable build. Both give the same bits (every lane does the
same IEEE operations; a test builds both). torch caches a build (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) by its name only, so the name holds a hash of the source, the flags
and, for a native build, this CPU's model and feature flags: a home directory shared by machines with
different CPUs never loads a build made for another CPU (which could stop on an illegal instruction).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("splat_ext.cpp")
_BASE_FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno")
NATIVE, PORTABLE = "native", "portable"
_PREFIX = "mirage_splat_"  # + kind + "_" + hash: the build's module name
_FUNCTIONS = ("splat_patches_cpu", "reduce_depth_cpu", "lift_patches_cpu", "hash_rows_cpu")
_state: dict = {}


def enabled() -> bool:
    """Whether the compiled path may be used (``MIRAGE_COMPILED_SPLAT`` unset or not ``0``)."""
    return os.environ.get("MIRAGE_COMPILED_SPLAT", "1") != "0"


def cpu_signature() -> str:
    """This CPU's model and feature flags (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    keep = ("model name", "flags", "Features", "CPU implementer", "CPU part")  # x86 / arm names
    seen = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip() for ln in lines if ":" in ln
            and ln.split(":", 1)[0].strip() in keep}
    return "|".join([platform.machine(), platform.processor(), *(f"{k}={seen[k]}" for k in sorted(seen))])


def build_name(kind: str, source: str) -> tuple[str, list[str]]:
    """The extension's name and compiler flags for a build ``kind`` (``"native"`` or ``"portable"``):
    the name hashes the source and flags, and for a native build this CPU's signature."""
    flags = [*_BASE_FLAGS, *(["-march=native"] if kind == NATIVE else [])]
    ident = "\n".join([source, " ".join(flags), cpu_signature() if kind == NATIVE else ""])
    return f"{_PREFIX}{kind}_{hashlib.sha256(ident.encode()).hexdigest()[:12]}", flags


# torch waits forever on the lock file of a build that was killed; one this old is taken as stale
STALE_LOCK_S = 600


def _build(kind: str):
    from torch.utils.cpp_extension import _get_build_directory, load_inline

    source = _SOURCE.read_text()
    name, flags = build_name(kind, source)
    build_dir = Path(_get_build_directory(name, verbose=False))
    lock = build_dir / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        raise RuntimeError(f"stale build lock {lock} (an earlier build was interrupted): delete it to build again")
    if not any(p.suffix in (".so", ".pyd") for p in build_dir.iterdir()):  # not built yet: say why we wait
        print(f"mirage: building the compiled splat once (~30 s; cached in {build_dir})", file=sys.stderr, flush=True)
    return load_inline(name=name, cpp_sources=[source], functions=list(_FUNCTIONS), extra_cflags=flags, verbose=False)


def extension(kind: str | None = None):
    """The built extension module, or ``None`` when it cannot be built here (tried once per process
    and kind). ``kind=None``: the native build, else the portable one (``MIRAGE_COMPILED_SPLAT=portable``
    asks for the portable one directly)."""
    if kind is None:
        kind = PORTABLE if os.environ.get("MIRAGE_COMPILED_SPLAT") == PORTABLE else NATIVE
    if kind in _state:
        return _state[kind]
    module, errors = None, []
    for k in ((NATIVE, PORTABLE) if kind == NATIVE else (PORTABLE,)):
        try:
            module = _state[k] if k in _state else _build(k)
            _state[k] = module
            break
        except Exception as e:  # no compiler, no headers, a flag it refuses, a build error
            errors.append(f"{k}: {' '.join(str(e).split())[:200]}")
    if module is None:  # the torch path gives the same bits, slower: one line, once per process
        print(f"warning: compiled splat unavailable, using the pure-torch splat (same results, slower): "
              f"{'; '.join(errors)}", file=sys.stderr, flush=True)
    _state[kind] = module
    return module


def for_device(device: torch.device | str):
    """The extension when tensors on ``device`` may use it (a CPU device, ``MIRAGE_COMPILED_SPLAT``
    not ``0``, and it builds here), else ``None``: the callers' torch code runs instead."""
    if torch.device(device).type != "cpu" or not enabled():
        return None
    return extension()


def describe(device: str = "cpu") -> str:
    """Which splat a read on ``device`` runs, for reports: ``"compiled C++ (native build)"``,
    ``"compiled C++ (portable build)"`` or ``"pure torch"``."""
    module = for_device(device)
    if module is None:
        return "pure torch"
    kind = NATIVE if module.__name__.startswith(f"{_PREFIX}{NATIVE}_") else PORTABLE
    return f"compiled C++ ({kind} build)"
