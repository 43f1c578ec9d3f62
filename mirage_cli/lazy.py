"""Lazy re-exports for a package's ``__init__`` (PEP 562), so that importing one light module of a
package does not import its heavy siblings (torch): ``__getattr__ = lazy_exports(__name__, {...})``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each name of ``exports`` (name -> submodule) on first use."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        setattr(sys.modules[package], name, value)  # later lookups find it directly
        return value
    return __getattr__
