"""The boosting libraries, one module each; a module's `KIND` is its entry here.

Adding a library is one new file in this folder defining a GBDTKind subclass and `KIND`: the
config accepts it as a member's `kind`, and the worker loop, the ensemble, Tune and the
registered model use it through the interface in base.py.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import lru_cache
from typing import Dict, Iterable, List

from training.gbdt.kinds.base import GBDTKind, RoundHooks, TrainJob

__all__ = ["GBDTKind", "RoundHooks", "TrainJob", "get", "import_libraries", "names"]


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


def import_libraries(kind_names: Iterable[str]) -> None:
    """Import these kinds' libraries without scikit-learn: in the driver before its parameter
    checks, and in every process that trains (a Train worker, a Tune trial).

    XGBoost and LightGBM import scikit-learn whenever it is installed (MLflow installs it), for
    their scikit-learn estimator classes only, which the project never uses; scikit-learn is most
    of the libraries' import, paid again in the fresh process every fit starts. Both treat
    scikit-learn as optional: while it reads as absent here, they leave those classes out. A
    process that has scikit-learn imported already keeps using it; afterwards it imports as usual."""
    hidden = "sklearn" not in sys.modules
    if hidden:
        sys.modules["sklearn"] = None  # type: ignore[assignment]  # `import sklearn` raises ImportError
    try:
        for name in kind_names:
            importlib.import_module(get(name).module)
    finally:
        if hidden:
            del sys.modules["sklearn"]
