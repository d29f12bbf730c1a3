"""MACE in Flax: configuration, modules, energy derivatives and model directories."""

from equitrain_jax.models.config import MACEConfig
from equitrain_jax.models.mace import MACE
from equitrain_jax.models.quantities import Outputs, energy_forces_stress

__all__ = ["MACE", "MACEConfig", "Outputs", "energy_forces_stress"]
