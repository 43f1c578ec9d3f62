"""The optional compiled splat (``splat_ext.cpp``), built at first use with ``torch.utils.cpp_extension``.

It is the CPU twin of :func:`mirage_cli.memory.splat.splat_patches`: the same fp32 operations in the
same order (built with ``-ffp-contract=off``, so no fused multiply-add changes a rounding), the same
footprints and the same deterministic z-buffer, so it returns the same bits (tests compare both).
It needs a C++ compiler at run time; without one, or with ``MIRAGE_COMPILED_SPLAT=0``, or on CUDA,
the pure-torch path runs. The build is cached by torch (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) under a name that includes the source's hash, so an edit rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

_SOURCE = Path(__file__).with_name("splat_ext.cpp")
_state: dict = {}


def enabled() -> bool:
    """Whether the compiled path may be used (``MIRAGE_COMPILED_SPLAT`` unset or not ``0``)."""
    return os.environ.get("MIRAGE_COMPILED_SPLAT", "1") != "0"


def extension():
    """The built extension module, or ``None`` when it cannot be built here (tried once per process)."""
    if "module" in _state:
        return _state["module"]
    module = None
    try:
        from torch.utils.cpp_extension import load_inline

        src = _SOURCE.read_text()
        digest = hashlib.sha256(src.encode()).hexdigest()[:12]
        module = load_inline(name=f"mirage_splat_{digest}", cpp_sources=[src], functions=["splat_patches_cpu"],
                             extra_cflags=["-O3", "-ffp-contract=off"], verbose=False)
    except Exception as e:  # no compiler, no headers, a build error: the torch path gives the same bits
        warnings.warn(f"compiled splat unavailable, using the pure-torch splat ({' '.join(str(e).split())[:200]})",
                      RuntimeWarning, stacklevel=2)
        module = None
    _state["module"] = module
    return module
