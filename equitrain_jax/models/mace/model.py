"""MACE as Flax linen modules: thin shells that own the parameters and call `equivariant` and `maths`.

``MACE(config).apply(variables, graph)`` returns the energy of each graph (eV).  ``variables`` has
two collections: ``params`` (trainable weights) and ``constants`` (the symmetric-contraction
U matrices, fixed by the architecture).

Slightly over 350 lines: one Flax shell per mace-torch block kind (the residual, agnostic and
non-linear interaction blocks included), so that the converter's mapping reads against one file.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from equitrain_jax.models import equivariant as eq
from equitrain_jax.models import radial
from equitrain_jax.models.layers import EnergyModel, Linear, RadialMLP, edge_geometry, masked_node_energies, normal
from equitrain_jax.models.mace import cueq, maths
from equitrain_jax.models.mace.config import NONLINEAR_BLOCK, MACEConfig


class SpeciesLinear(nn.Module):
    """Species-dependent channel mixing (skip connection); shapes: irrep → (C_in, Z, C_out)."""

    shapes: tuple[tuple[str, tuple[int, int, int]], ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: eq.Features, species: jnp.ndarray) -> eq.Features:
        weights = {ir: self.param(ir, normal(), shape, self.param_dtype) for ir, shape in self.shapes}
        return maths.species_linear(x, species, weights)


def u_matrix(irreps_in: tuple[str, ...], ir_out: str, degree: int) -> np.ndarray:
    """A basis of symmetric degree-ν couplings of ``irreps_in`` to ``ir_out``: [M, D…(ν), K].

    Used only to initialise a model from scratch; converted models carry mace-torch's own
    U matrices.
    """
    basis = e3nn.reduced_symmetric_tensor_product_basis(
        e3nn.Irreps("+".join(irreps_in)), degree, keep_ir=[ir_out]
    )
    dim = eq.irrep(ir_out).dim
    array = np.asarray(basis.array)
    array = array.reshape(array.shape[:-1] + (-1, dim))
    return np.moveaxis(array, -1, 0)


@functools.lru_cache(maxsize=None)
def architecture_monomials(irreps_in: tuple[str, ...], ir_out: str, degree: int) -> np.ndarray:
    """The monomials (index tuples, [T, ν]) of the degree-ν symmetric coupling of the architecture:
    those of any complete basis of its U matrices, hence of the converted ones too."""
    return maths.compress_coupling(u_matrix(irreps_in, ir_out, degree))[0]


def convolution(config: MACEConfig) -> Callable:
    """The edge convolution of ``config.backend``, with the signature of `eq.convolution_messages`."""
    if config.backend == "cuequivariance":
        return functools.partial(cueq.convolution_messages, method=cueq.resolve_method(config.cueq_method))
    return eq.convolution_messages


class SymmetricContraction(nn.Module):
    """Body-order expansion of one output irrep; weights [Z, K_ν, C] per degree ν, and the
    U matrices as constants in the sparse form of `equivariant.compress_coupling`.  ``backend``
    and ``cueq_method`` as in `MACEConfig`."""

    irreps_in: tuple[str, ...]
    ir_out: str
    correlation: int
    num_elements: int
    num_channels: int
    param_dtype: jnp.dtype = jnp.float32
    backend: str = "e3nn"
    cueq_method: Optional[str] = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, species: jnp.ndarray) -> jnp.ndarray:
        weights, monomials, couplings = [], [], []
        for nu in range(1, self.correlation + 1):
            compressed = lambda nu=nu: maths.compress_coupling(u_matrix(self.irreps_in, self.ir_out, nu))
            index = self.variable("constants", f"monomials_{nu}", lambda c=compressed: jnp.asarray(c()[0])).value
            coupling = self.variable(
                "constants", f"coupling_{nu}", lambda c=compressed: jnp.asarray(c()[1], self.param_dtype)
            ).value
            k = coupling.shape[-1]
            shape = (self.num_elements, k, self.num_channels)
            weights.append(self.param(f"weights_{nu}", normal(1.0 / max(k, 1)), shape, self.param_dtype))
            monomials.append(index)
            couplings.append(coupling)
        if self.backend == "cuequivariance":
            pattern = [architecture_monomials(self.irreps_in, self.ir_out, nu) for nu in range(1, self.correlation + 1)]
            method = cueq.resolve_method(self.cueq_method)
            return cueq.symmetric_contraction(x, species, weights, monomials, couplings, pattern, method)
        return maths.symmetric_contraction(x, species, weights, monomials, couplings)


class Parameters(nn.Module):
    """A named group of parameters, returned as a dict; ``shapes``: name → (shape, initializer)."""

    shapes: tuple[tuple[str, tuple[int, ...], Callable], ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self) -> dict[str, jnp.ndarray]:
        return {name: self.param(name, init, shape, self.param_dtype) for name, shape, init in self.shapes}


class NormalisedMLP(nn.Module):
    """Affine layers ``layer_i`` (kernel, bias) with LayerNorm ``norm_i`` (scale, bias) and SiLU
    between them; sizes = (input, hidden…, output)."""

    sizes: tuple[int, ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        zeros, ones = nn.initializers.zeros, nn.initializers.ones
        layers = []
        for i, (h_in, h_out) in enumerate(zip(self.sizes, self.sizes[1:])):
            affine = (("kernel", (h_in, h_out), normal(1.0 / math.sqrt(h_in))), ("bias", (h_out,), zeros))
            layer = Parameters(affine, self.param_dtype, name=f"layer_{i}")()
            if i < len(self.sizes) - 2:
                norm = Parameters((("scale", (h_out,), ones), ("bias", (h_out,), zeros)), self.param_dtype, name=f"norm_{i}")()
                layer = {**layer, "norm_scale": norm["scale"], "norm_bias": norm["bias"]}
            layers.append(layer)
        return eq.normalised_mlp(x, layers)


class Interaction(nn.Module):
    """One message-passing layer (mace-torch's RealAgnostic{,Residual,Density,DensityResidual}InteractionBlock).

    ``edge_irreps``: (multiplicity, irrep) of the features convolved over the edges (``linear_up``
    maps the node features to them).
    """

    config: MACEConfig
    block: str
    irreps_in: tuple[str, ...]
    irreps_target: tuple[str, ...]
    irreps_hidden_out: tuple[str, ...]
    edge_irreps: tuple[tuple[int, str], ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats, species, sh, edge_feats, cutoff, senders, edge_mask):
        cfg = self.config
        c, z = cfg.num_channels, cfg.num_elements
        n_nodes = species.shape[0]
        residual = "Residual" in self.block
        density_normalised = "Density" in self.block
        paths, paths_into = maths.convolution_layout(self.edge_irreps, cfg.max_ell, self.irreps_target)
        sc = None
        if residual:
            skip = tuple((ir, (c, z, c)) for ir in self.irreps_hidden_out if ir in self.irreps_in)
            sc = SpeciesLinear(skip, self.param_dtype, name="skip_tp")(feats, species)
        up = Linear(tuple((ir, (c, m)) for m, ir in self.edge_irreps), self.param_dtype, name="linear_up")(feats)
        sizes = (cfg.num_bessel,) + tuple(cfg.radial_mlp) + (sum(paths_into.values()),)
        weights = RadialMLP(sizes, cfg.radial_activation_constant, self.param_dtype, name="radial_mlp")(edge_feats)
        if cutoff is not None:
            weights = weights * cutoff[:, None]
        weights = weights * edge_mask[:, None]
        messages = convolution(cfg)(up, senders, sh, weights, paths)
        messages = Linear(
            tuple((ir, (paths_into[ir], c)) for ir in self.irreps_target), self.param_dtype, name="linear"
        )(messages)
        if density_normalised:
            density_mlp = RadialMLP(
                (cfg.num_bessel, 1), cfg.radial_activation_constant, self.param_dtype, name="density_mlp"
            )
            edge_density = jnp.tanh(density_mlp(edge_feats)[:, 0] ** 2) * edge_mask
            if cutoff is not None:
                edge_density = edge_density * cutoff
            density = eq.sum_over_neighbours(edge_density, n_nodes)
            messages = {ir: m / (density[:, None, None] + 1.0) for ir, m in messages.items()}
        else:
            messages = {ir: m / cfg.avg_num_neighbors for ir, m in messages.items()}
        if not residual:
            skip = tuple((ir, (c, z, c)) for ir in self.irreps_target)
            messages = SpeciesLinear(skip, self.param_dtype, name="skip_tp")(messages, species)
        return messages, sc


class NonLinearInteraction(nn.Module):
    """mace-torch's RealAgnosticResidualNonLinearInteractionBlock: radial weights and edge density
    from the radial basis and learned source/target element embeddings, messages normalised by
    the density, a gate non-linearity, and a species-independent linear skip connection."""

    config: MACEConfig
    irreps_in: tuple[str, ...]
    irreps_target: tuple[str, ...]
    irreps_hidden_out: tuple[str, ...]
    edge_irreps: tuple[tuple[int, str], ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats, species, sh, edge_feats, cutoff, senders, edge_mask):
        cfg = self.config
        c, z = cfg.num_channels, cfg.num_elements
        paths, paths_into = maths.convolution_layout(self.edge_irreps, cfg.max_ell, self.irreps_target)
        gated = tuple(ir for ir in self.irreps_target if ir != "0e")
        widths = {ir: c * (1 + len(gated)) if ir == "0e" else c for ir in self.irreps_target}  # + one gate each
        dense = lambda shapes, name: Linear(tuple(shapes), self.param_dtype, name=name)

        sc = dense(((ir, (c, c)) for ir in self.irreps_hidden_out if ir in self.irreps_in), "skip_tp")(feats)
        up = dense(((ir, (c, m)) for m, ir in self.edge_irreps), "linear_up")(feats)
        residual = dense(((ir, (m, widths[ir])) for m, ir in self.edge_irreps), "linear_res")(up)
        source = self.param("source_embedding", normal(), (z, c), self.param_dtype)
        target = self.param("target_embedding", normal(), (z, c), self.param_dtype)
        features = maths.edge_embedding_features(edge_feats, source, target, species, senders)
        n_in = features.shape[-1]
        weights = NormalisedMLP((n_in,) + tuple(cfg.radial_mlp) + (sum(paths_into.values()),), self.param_dtype,
                                name="radial_mlp")(features)
        edge_density = jnp.tanh(NormalisedMLP((n_in, 64, 1), self.param_dtype, name="density_mlp")(features)[:, 0] ** 2)
        if cutoff is not None:
            weights, edge_density = weights * cutoff[:, None], edge_density * cutoff
        density = eq.sum_over_neighbours(edge_density * edge_mask, species.shape[0])
        messages = convolution(cfg)(up, senders, sh, weights * edge_mask[:, None], paths)
        messages = dense(((ir, (paths_into[ir], widths[ir])) for ir in self.irreps_target), "linear_1")(messages)
        alpha = self.param("alpha", nn.initializers.constant(20.0), (), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros, (), self.param_dtype)
        messages = maths.density_normalised_update(messages, residual, density, alpha, beta)
        messages = eq.gate(messages, gated, *cfg.gate_activation_constants)
        return dense(((ir, (c, c)) for ir in self.irreps_target), "linear_2")(messages), sc


class Product(nn.Module):
    """Symmetric contraction of the messages, a linear layer, plus the residual."""

    config: MACEConfig
    correlation: int
    irreps_target: tuple[str, ...]
    irreps_hidden_out: tuple[str, ...]
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, messages, sc, species):
        cfg = self.config
        c = cfg.num_channels
        num_elements = cfg.num_elements
        if cfg.agnostic_product:  # one weight set for every element
            num_elements, species = 1, jnp.zeros_like(species)
        x = jnp.concatenate([messages[ir] for ir in self.irreps_target], axis=-1)
        contracted = {
            ir: SymmetricContraction(
                self.irreps_target,
                ir,
                self.correlation,
                num_elements,
                c,
                self.param_dtype,
                cfg.backend,
                cfg.cueq_method,
                name=f"symmetric_contraction_{ir}",
            )(x, species)
            for ir in self.irreps_hidden_out
        }
        out = Linear(tuple((ir, (c, c)) for ir in self.irreps_hidden_out), self.param_dtype, name="linear")(
            contracted
        )
        if sc is not None:
            out = {ir: out[ir] + sc[ir] if ir in sc else out[ir] for ir in out}
        return out


class Readout(nn.Module):
    """Per-atom energies for every head from the scalar channels: [n, n_heads]."""

    config: MACEConfig
    nonlinear: bool
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: eq.Features, node_heads: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        c, n_heads = cfg.num_channels, len(cfg.heads)
        x = {"0e": feats["0e"]}
        if not self.nonlinear:
            return Linear((("0e", (c, n_heads)),), self.param_dtype, name="linear")(x)["0e"][:, :, 0]
        hidden = n_heads * cfg.readout_mlp_channels
        h = Linear((("0e", (c, hidden)),), self.param_dtype, name="linear_1")(x)["0e"]
        h = cfg.readout_activation_constant * jax.nn.silu(h)
        if n_heads > 1:
            own_head = jnp.arange(hidden) // cfg.readout_mlp_channels == node_heads[:, None]
            h = h * own_head[:, :, None]
        return Linear((("0e", (hidden, n_heads)),), self.param_dtype, name="linear_2")({"0e": h})["0e"][:, :, 0]


def sorted_irreps(names) -> tuple[str, ...]:
    return tuple(sorted(names, key=eq.torch_sort_key))


class MACE(EnergyModel):
    """MACE / ScaleShiftMACE energy model on `jraph.GraphsTuple` batches (see `equitrain_jax.data`)."""

    config: MACEConfig
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        c = cfg.num_channels
        hidden = tuple(ir for _, ir in cfg.hidden_irreps_list)
        target = sorted_irreps(str(e3nn.Irrep(l, (-1) ** l)) for l in range(cfg.max_ell + 1))
        self.embedding = self.param(
            "node_embedding", normal(), (cfg.num_elements, c), self.param_dtype
        )
        interactions, products, readouts = [], [], []
        irreps_in = ("0e",)
        for i in range(cfg.num_interactions):
            last = i == cfg.num_interactions - 1
            hidden_out = ("0e",) if (last or cfg.num_interactions == 1) else hidden
            block = cfg.interaction_first if i == 0 else cfg.interaction
            edge_irreps = cfg.layer_edge_irreps(i, irreps_in)
            if block == NONLINEAR_BLOCK:
                interaction = NonLinearInteraction(
                    cfg, irreps_in, target, hidden_out, edge_irreps, self.param_dtype, name=f"interactions_{i}"
                )
            else:
                interaction = Interaction(
                    cfg, block, irreps_in, target, hidden_out, edge_irreps, self.param_dtype, name=f"interactions_{i}"
                )
            interactions.append(interaction)
            products.append(
                Product(cfg, cfg.correlation[i], target, hidden_out, self.param_dtype, name=f"products_{i}")
            )
            readouts.append(
                Readout(cfg, last and cfg.num_interactions > 1, self.param_dtype, name=f"readouts_{i}")
            )
            irreps_in = hidden
        self.interactions = interactions
        self.products = products
        self.readouts = readouts

    def node_energies(self, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """Energy of each atom (eV), [n_node]; zero on padding nodes."""
        cfg = self.config
        positions = graph.nodes["positions"]
        dtype = positions.dtype
        species = graph.nodes["species"]
        senders, receivers = graph.senders, graph.receivers
        geometry = edge_geometry(graph, cfg.max_ell, cfg.r_max)
        node_heads = graph.globals["head"][geometry.node_graph]
        edge_mask, lengths, sh = geometry.mask, geometry.lengths, geometry.harmonics

        atomic_numbers = jnp.asarray(cfg.atomic_numbers)
        covalent = jnp.asarray(cfg.covalent_radii or [0.0] * cfg.num_elements, dtype)
        cov_s, cov_r = covalent[species[senders]], covalent[species[receivers]]
        cutoff = radial.polynomial_cutoff(lengths, cfg.r_max, cfg.num_polynomial_cutoff)
        x = lengths
        if cfg.distance_transform == "Agnesi":
            q, p, a = cfg.agnesi
            x = radial.agnesi_transform(lengths, 0.5 * (cov_s + cov_r), q, p, a)
        elif cfg.distance_transform == "Soft":
            x = radial.soft_transform(lengths, cov_s + cov_r, cfg.soft_alpha)
        edge_feats = radial.bessel_basis(x, cfg.r_max, cfg.num_bessel) * edge_mask[:, None]
        if cfg.apply_cutoff:
            edge_feats = edge_feats * cutoff[:, None]
            edge_cutoff = None
        else:
            edge_cutoff = cutoff

        n_nodes = positions.shape[0]
        pair = jnp.zeros((n_nodes,), dtype)
        if cfg.pair_repulsion:
            edge_pair = radial.zbl_edge_energy(
                lengths,
                atomic_numbers[species[senders]],
                atomic_numbers[species[receivers]],
                cov_s + cov_r,
                cfg.num_polynomial_cutoff,
                cfg.zbl_a_prefactor,
                cfg.zbl_a_exponent,
                tuple(cfg.zbl_coefficients),
            )
            pair = eq.sum_over_neighbours(edge_pair * edge_mask, n_nodes)

        feats = {"0e": (self.embedding[species] / math.sqrt(cfg.num_elements))[:, :, None]}
        node_inter = pair
        for interaction, product, readout in zip(self.interactions, self.products, self.readouts):
            messages, sc = interaction(feats, species, sh, edge_feats, edge_cutoff, senders, edge_mask)
            feats = product(messages, sc, species)
            per_head = readout(feats, node_heads)
            node_inter = node_inter + jnp.take_along_axis(per_head, node_heads[:, None], axis=1)[:, 0]

        e0 = jnp.asarray(cfg.atomic_energies or [[0.0] * cfg.num_elements] * len(cfg.heads), dtype)
        scale = jnp.asarray(cfg.scale, dtype)[node_heads]
        shift = jnp.asarray(cfg.shift, dtype)[node_heads]
        energies = e0[node_heads, species] + scale * node_inter + shift
        return masked_node_energies(graph, energies)

