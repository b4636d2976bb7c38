"""Optional dependencies (`pip install 'clawtune[extra]'`), imported only by the commands that need them."""

from __future__ import annotations

import importlib
from types import ModuleType

from clawtune.problems import InputError


class MissingExtra(InputError):
    """A command needs a package from one of clawtune's extras that is not installed."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or say which extra brings it (an ImportError deep in a command says nothing about the fix)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{purpose} needs the package {module!r}: pip install 'clawtune[{extra}]'") from exc
