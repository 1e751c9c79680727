"""The boosting libraries, one module each; a module's `KIND` is its entry here.

Adding a library is one new file in this folder defining a GBDTKind subclass and `KIND`: the
config accepts it as a member's `kind`, and the worker loop, the ensemble, Tune and the
registered model use it through the interface in base.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Dict, List

from training.gbdt.kinds.base import GBDTKind, RoundHooks, TrainJob

__all__ = ["GBDTKind", "RoundHooks", "TrainJob", "get", "names"]


@lru_cache(maxsize=None)
def _all() -> Dict[str, GBDTKind]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            kind = importlib.import_module(f"{__name__}.{info.name}").KIND
            found[kind.name] = kind
    return found


def names() -> List[str]:
    return sorted(_all())


def get(name: str) -> GBDTKind:
    try:
        return _all()[name]
    except KeyError:
        raise ValueError(f"unknown GBDT kind '{name}' (known: {', '.join(names())})") from None
