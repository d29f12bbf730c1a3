"""Radial functions of the edge length r (Å): basis, cutoff envelope, distance transforms, ZBL.

Pure functions of arrays; element-dependent constants (covalent radii in Å, atomic numbers) are
passed per edge, already gathered by the caller.
"""

from __future__ import annotations

import jax.numpy as jnp

ZBL_COEFFICIENTS = (0.1818, 0.5099, 0.2802, 0.02817)
ZBL_EXPONENTS = (3.2, 0.9423, 0.4028, 0.2016)
COULOMB_EV_ANGSTROM = 14.3996  # e²/(4πε₀) in eV·Å, the value ZBL implementations use
BOHR_RADIUS_ZBL = 0.529  # Å, as in the ZBL screening length


def polynomial_cutoff(r: jnp.ndarray, r_max: float | jnp.ndarray, p: int) -> jnp.ndarray:
    """Smooth envelope going from 1 at r = 0 to 0 at r = r_max (zero beyond). Shape of r."""
    u = r / r_max
    envelope = (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * u**p
        + p * (p + 2.0) * u ** (p + 1)
        - p * (p + 1.0) / 2.0 * u ** (p + 2)
    )
    return envelope * (r < r_max)


def bessel_basis(x: jnp.ndarray, r_max: float, num_basis: int) -> jnp.ndarray:
    """√(2/r_max)·sin(nπx/r_max)/x for n = 1…num_basis. [...] → [..., num_basis]."""
    n = jnp.arange(1, num_basis + 1, dtype=x.dtype)
    x = x[..., None]
    return jnp.sqrt(2.0 / r_max) * jnp.sin(n * (jnp.pi / r_max) * x) / x


def agnesi_transform(
    r: jnp.ndarray, r0: jnp.ndarray, q: float, p: float, a: float
) -> jnp.ndarray:
    """Agnesi distance transform 1/(1 + a (r/r0)^q / (1 + (r/r0)^(q−p))); r0 = mean covalent radius."""
    x = r / r0
    return 1.0 / (1.0 + a * x**q / (1.0 + x ** (q - p)))


def soft_transform(r: jnp.ndarray, r0: jnp.ndarray, alpha: float) -> jnp.ndarray:
    """Tanh switch from ¾r0 (short range) to r (long range); r0 = sum of covalent radii."""
    p0 = 0.75 * r0
    p1 = 4.0 / 3.0 * r0
    switch = 0.5 * (1.0 + jnp.tanh(alpha / (p1 - p0) * (r - 0.5 * (p0 + p1))))
    return p0 + (r - p0) * switch


def zbl_edge_energy(
    r: jnp.ndarray,
    z_sender: jnp.ndarray,
    z_receiver: jnp.ndarray,
    r_max: jnp.ndarray,
    p: int,
    a_prefactor: float,
    a_exponent: float,
    coefficients: tuple[float, ...] = ZBL_COEFFICIENTS,
) -> jnp.ndarray:
    """Half the ZBL screened-nuclear repulsion of one directed edge (eV), enveloped to vanish at r_max.

    r_max per edge is the sum of the two covalent radii; summing this over all edges into a receiver
    gives that atom's share of the pair energy.
    """
    z_u = z_sender.astype(r.dtype)
    z_v = z_receiver.astype(r.dtype)
    a = a_prefactor * BOHR_RADIUS_ZBL / (z_u**a_exponent + z_v**a_exponent)
    x = r / a
    phi = sum(c * jnp.exp(-d * x) for c, d in zip(coefficients, ZBL_EXPONENTS))
    v = COULOMB_EV_ANGSTROM * z_u * z_v / r * phi
    return 0.5 * v * polynomial_cutoff(r, r_max, p)


def xplor_cutoff(r: jnp.ndarray, r_on: float, r_max: float) -> jnp.ndarray:
    """XPLOR switching function: 1 below r_on, a smooth cubic-in-r² switch to 0 at r_max, 0 beyond.

    (r_max² − r²)² (r_max² + 2r² − 3r_on²) / (r_max² − r_on²)³ between r_on and r_max (Å), as in
    SevenNet and HOOMD-blue.  Shape of r.
    """
    r2, on2, max2 = r * r, r_on * r_on, r_max * r_max
    switch = (max2 - r2) ** 2 * (max2 + 2.0 * r2 - 3.0 * on2) / (max2 - on2) ** 3
    return jnp.where(r < r_on, 1.0, switch) * (r < r_max)


def bessel_basis_frequencies(r: jnp.ndarray, frequencies: jnp.ndarray, r_max: float) -> jnp.ndarray:
    """(2/r_max)·sin(c_n r)/r with frequencies c_n (1/Å; trainable in NequIP/SevenNet, nπ/r_max
    at initialisation).  [...] → [..., n_basis]."""
    r = r[..., None]
    return (2.0 / r_max) * jnp.sin(frequencies * r) / r
