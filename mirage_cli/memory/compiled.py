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
same IEEE operations; a test builds both).

Where a build lives. torch caches a build (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions/pyXY_cpu``) by its name only, and that folder is shared by every
environment of the user: environments with another torch, Python or compiler used to rebuild over
each other's build in turn (issue 22: ``main.o`` built 9 times by 3 environments in 30 minutes).
So the name hashes everything that makes a build incompatible or different -- the source, the
flags, the compiler (``$CXX``), torch's version, location and C++ ABI, the Python version and
extension ABI tag, the environment (``sys.prefix``) and, for a native build, this CPU's model and
feature flags (a home directory shared by machines with different CPUs never loads a build made for
another CPU, which could stop on an illegal instruction). Each environment gets its own folder and
never touches another's.

Every build says so on stderr when it starts (why: none yet, or an earlier one was interrupted) and
how long it took when done; loading a finished build prints nothing. A build is finished when its
folder holds the stamp file written after a successful load. ``python -m mirage_cli.memory.compiled``
builds ahead of time (an image, a CI cache) and says where.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import sysconfig
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


def environment_signature() -> str:
    """What makes a build of this environment unusable by another: torch (version, location, C++
    ABI), Python (version, extension ABI tag), the environment's prefix and the compiler's name."""
    abi = getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", "?")
    return "|".join([f"torch={torch.__version__}", f"torch_dir={os.path.dirname(torch.__file__)}", f"cxx11_abi={abi}",
                     f"python={sys.version}", f"ext={sysconfig.get_config_var('EXT_SUFFIX')}",
                     f"prefix={os.path.realpath(sys.prefix)}", f"cxx={os.environ.get('CXX', 'c++')}"])


def build_name(kind: str, source: str) -> tuple[str, list[str]]:
    """The extension's name and compiler flags for a build ``kind`` (``"native"`` or ``"portable"``):
    the name hashes the source, the flags and :func:`environment_signature`, and for a native build
    this CPU's signature."""
    flags = [*_BASE_FLAGS, *(["-march=native"] if kind == NATIVE else [])]
    ident = "\n".join([source, " ".join(flags), environment_signature(), cpu_signature() if kind == NATIVE else ""])
    return f"{_PREFIX}{kind}_{hashlib.sha256(ident.encode()).hexdigest()[:12]}", flags


# torch waits forever on the lock file of a build that was killed; one this old is taken as stale
STALE_LOCK_S = 600
_STAMP = "mirage_build.txt"  # written into the build folder once the build loaded: the build is finished


def _compile(name: str, source: str, flags: list[str], build_dir: Path):
    """torch's compile and load (ninja does nothing where the build is up to date)."""
    from torch.utils.cpp_extension import load_inline

    return load_inline(name=name, cpp_sources=[source], functions=list(_FUNCTIONS), extra_cflags=flags,
                       build_directory=str(build_dir), verbose=False)


def _build(kind: str):
    from torch.utils.cpp_extension import _get_build_directory

    source = _SOURCE.read_text()
    name, flags = build_name(kind, source)
    build_dir = Path(_get_build_directory(name, verbose=False))
    stamp, lock = build_dir / _STAMP, build_dir / "lock"
    finished = stamp.exists() and any(p.suffix in (".so", ".pyd") for p in build_dir.iterdir())
    if finished:  # a load; ninja rebuilds only where a file of the build went missing: say so then
        so = [p for p in build_dir.iterdir() if p.suffix in (".so", ".pyd")]
        before, t0 = {p: p.stat().st_mtime_ns for p in so}, time.perf_counter()
        module = _compile(name, source, flags, build_dir)
        if any(p.stat().st_mtime_ns != t for p, t in before.items() if p.exists()):
            print(f"mirage: rebuilt the compiled splat in {time.perf_counter() - t0:.1f} s (a file of its build in "
                  f"{build_dir} was missing or changed)", file=sys.stderr, flush=True)
        return module
    why = "once per environment"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink()  # a killed build's lock: torch would wait on it forever
        why = "an earlier build was interrupted: its stale lock was removed"
    elif lock.exists():
        why = "another process is building it: waiting for it"
    elif any(build_dir.iterdir()):
        why = "an earlier build did not finish"
    print(f"mirage: building the compiled splat for this environment ({kind} build, {why}; 41-43 s measured on "
          f"2 cores, longer under load; cached in {build_dir})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    module = _compile(name, source, flags, build_dir)
    stamp.write_text(f"{name}\n{' '.join(flags)}\n{environment_signature()}\n")
    print(f"mirage: built the compiled splat in {time.perf_counter() - t0:.1f} s ({kind} build; later runs load it)",
          file=sys.stderr, flush=True)
    return module


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


if __name__ == "__main__":  # build ahead of time: python -m mirage_cli.memory.compiled [portable]
    built = extension(PORTABLE if sys.argv[1:] == [PORTABLE] else NATIVE)
    print(f"{describe()}: {built.__file__ if built is not None else 'not built (see the warning above)'}")
    sys.exit(0 if built is not None else 1)
