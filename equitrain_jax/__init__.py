"""equitrain-jax: fine-tuning and analytic-Hessian phonons for MACE and SevenNet potentials in JAX.

The names below are imported on first use (PEP 562), so that ``import equitrain_jax.cli`` and the
command line's input checks do not load JAX: a mistyped option costs a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Calculator": "equitrain_jax.calculator",
    "MACE": "equitrain_jax.models.mace",
    "MACEConfig": "equitrain_jax.models.mace",
    "ModelBundle": "equitrain_jax.models.io",
    "Potential": "equitrain_jax.potential",
    "SevenNet": "equitrain_jax.models.sevennet",
    "SevenNetConfig": "equitrain_jax.models.sevennet",
    "load_model": "equitrain_jax.models.io",
    "save_model": "equitrain_jax.models.io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'equitrain_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
