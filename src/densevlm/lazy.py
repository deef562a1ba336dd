"""Names a package imports on first use (a PEP 562 module ``__getattr__``), so importing it stays light.

    >>> _HOMES = homes("densevlm.data", {"images": ("find_images", "open_image_source")})
    >>> __all__ = list(_HOMES)
    >>> __getattr__ = loader("densevlm.data", _HOMES)
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["homes", "loader"]


def homes(package: str, modules: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """``{name: home module}`` from ``{module under package: its names}``."""
    return {name: f"{package}.{module}" for module, names in modules.items() for name in names}


def loader(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each of ``names`` from its home on first use."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
