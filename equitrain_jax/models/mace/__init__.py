"""The MACE family (mace-torch's MACE and ScaleShiftMACE): configuration and Flax modules."""

from equitrain_jax.models.mace.config import MACEConfig
from equitrain_jax.models.mace.model import MACE

__all__ = ["MACE", "MACEConfig"]
