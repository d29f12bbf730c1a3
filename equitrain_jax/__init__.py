"""equitrain-jax: fine-tuning and analytic-Hessian phonons for MACE and SevenNet potentials in JAX."""

from equitrain_jax.calculator import Calculator
from equitrain_jax.models.io import ModelBundle, load_model, save_model
from equitrain_jax.models.mace import MACE, MACEConfig
from equitrain_jax.models.sevennet import SevenNet, SevenNetConfig
from equitrain_jax.potential import Potential

__all__ = [
    "Calculator", "MACE", "MACEConfig", "ModelBundle", "Potential", "SevenNet", "SevenNetConfig", "load_model",
    "save_model",
]
