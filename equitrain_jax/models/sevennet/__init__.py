"""The SevenNet family (NequIP architecture as built by sevenn): configuration and Flax modules."""

from equitrain_jax.models.sevennet.config import SevenNetConfig
from equitrain_jax.models.sevennet.model import SevenNet

__all__ = ["SevenNet", "SevenNetConfig"]
