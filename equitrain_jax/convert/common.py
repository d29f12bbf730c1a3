"""What every converter shares: the one torch import of the package, its error type and tensor
readers.  Only ``equitrain_jax.convert`` imports torch, and only through `import_torch`."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np


class ConversionError(ValueError):
    """The torch model or checkpoint uses something its converter does not map; the message names it."""


def import_torch(require_mace: bool = False):
    """Import and return torch, with mace-torch imported first when it is installed (mace sets the
    torch.load flag that e3nn 0.4.4 needs, so mace must precede e3nn); ImportError naming the
    missing package, also for a missing mace-torch with ``require_mace``."""
    # mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for e3nn 0.4.4, and torch then warns, in two lines,
    # at every torch.load without weights_only (e3nn's own constants among them): expected here
    warnings.filterwarnings("ignore", message="Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected",
                            category=UserWarning)
    try:
        if require_mace or importlib.util.find_spec("mace") is not None:
            import mace  # noqa: F401
        import torch
    except ImportError as error:
        raise ImportError(
            "converting a PyTorch model needs torch (and mace-torch for MACE models): "
            "pip install 'equitrain-jax[torch]'"
        ) from error
    return torch


def to_numpy(tensor) -> np.ndarray:
    """A detached CPU copy of a torch tensor as a numpy array."""
    return tensor.detach().cpu().numpy().copy()


def to_float(value) -> float:
    """A Python float of a one-element tensor (or of a number)."""
    return float(value.detach().cpu().reshape(-1)[0]) if hasattr(value, "detach") else float(value)
