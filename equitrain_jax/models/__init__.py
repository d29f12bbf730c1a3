"""Models in Flax, one folder per family (`mace`, `sevennet`) behind one interface
(`family.ModelConfig`, `layers.EnergyModel`); the energy and its derivatives (`quantities`); model
directories (`io`)."""

from equitrain_jax.models.family import ModelConfig
from equitrain_jax.models.mace import MACE, MACEConfig
from equitrain_jax.models.quantities import (
    Outputs,
    energy,
    energy_forces_stress,
    hessian_vector_product,
    node_energy_function,
    third_order_product,
)
from equitrain_jax.models.sevennet import SevenNet, SevenNetConfig

__all__ = [
    "MACE",
    "MACEConfig",
    "ModelConfig",
    "Outputs",
    "SevenNet",
    "SevenNetConfig",
    "energy",
    "energy_forces_stress",
    "hessian_vector_product",
    "node_energy_function",
    "third_order_product",
]
