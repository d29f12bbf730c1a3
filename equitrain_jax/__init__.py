"""equitrain-jax: MACE interatomic potentials in JAX, converted from mace-torch."""

from equitrain_jax.calculator import Calculator
from equitrain_jax.models.config import MACEConfig
from equitrain_jax.models.io import ModelBundle, load_model, save_model
from equitrain_jax.models.mace import MACE
from equitrain_jax.potential import Potential

__all__ = ["Calculator", "MACE", "MACEConfig", "ModelBundle", "Potential", "load_model", "save_model"]
