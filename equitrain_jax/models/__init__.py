"""Models in Flax (MACE, SevenNet): configuration, modules, energy derivatives and model directories."""

from equitrain_jax.models.config import MACEConfig, SevenNetConfig
from equitrain_jax.models.mace import MACE
from equitrain_jax.models.quantities import Outputs, energy_forces_stress
from equitrain_jax.models.sevennet import SevenNet

__all__ = ["MACE", "MACEConfig", "Outputs", "SevenNet", "SevenNetConfig", "energy_forces_stress"]
