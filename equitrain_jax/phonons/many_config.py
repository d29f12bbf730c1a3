"""Defaults of `equitrain_jax.phonons.many`, in a module without JAX so that the command line reads
them before loading it."""

BATCH_ATOMS = 256
"""Most supercell atoms in one batched graph (a larger supercell forms its own batch)."""
TANGENT_EDGES = 24576
"""Default chunk: as many tangents per compiled call as keep tangents × padded atoms × neighbour
slots ≤ this (at least 1).  A call's memory grows with its edge slots times its tangents:
SevenNet-0 in float32 needs about 0.1 MB per slot and tangent (256 atoms × 128 slots: 5.5 GB
with one tangent, 11.8 GB with three, by XLA's accounting), so this keeps a call's tangents
within about 2.5 GB for it."""
MESH = (20, 20, 20)
"""Γ-centred q-point mesh of the summary's frequencies and thermal properties."""
