"""Defaults of `equitrain_jax.phonons.many`, in a module without JAX so that the command line reads
them before loading it."""

BATCH_ATOMS = 256
"""Most supercell atoms in one batched graph (a larger supercell forms its own batch)."""
TANGENT_ATOMS = 768
"""Default chunk: as many tangents per compiled call as keep tangents × padded atoms ≤ this (≥ 1)."""
MESH = (20, 20, 20)
"""Γ-centred q-point mesh of the summary's frequencies and thermal properties."""
