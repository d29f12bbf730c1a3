"""SevenNet (NequIP architecture as built by sevenn) as Flax linen modules: thin shells that own the
parameters and call `nequip` / `equivariant`.

``SevenNet(config).apply(variables, graph)`` returns the energy of each graph (eV), with the same
contract as `MACE`: padded neighbour-major graphs, ``variables = {"params", "constants"}``
(``constants`` is empty: every fixed number lives in the config) and ``node_energies``.  Parameter
names follow MACE's (``interactions_<t>``, ``readouts_<h>``, one readout per head) so adapter
patterns carry over.

One interaction (sevenn's ``NequIP_interaction_block`` with a linear self-connection)::

    sc = self_connection(x);  x = linear_1(x)
    x = Σ_neighbours TP(x_j, Y(r_ij); radial_mlp(basis(|r_ij|)·XPLOR(|r_ij|))) / denominator
    x = gate(linear_2(x) + sc)

with r_ij = r_j − r_i, from the receiving atom i to its neighbour j (sevenn's edge direction).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import jraph

from equitrain_jax.models import equivariant as eq
from equitrain_jax.models import radial
from equitrain_jax.models.equivariant import irreps_list
from equitrain_jax.models.layers import EnergyModel, Linear, RadialMLP, edge_geometry, masked_node_energies, normal
from equitrain_jax.models.sevennet import nequip
from equitrain_jax.models.sevennet.config import SevenNetConfig


def gate_input(irreps_out: list[tuple[int, str]]) -> dict[str, int]:
    """Multiplicity of each irrep entering the gate that yields ``irreps_out``: the scalars plus one
    gate per gated channel in ``0e``, then the gated irreps."""
    scalars = sum(mul for mul, ir in irreps_out if ir == "0e")
    gated = {ir: mul for mul, ir in irreps_out if ir != "0e"}
    return {"0e": scalars + sum(gated.values()), **gated}


class Interaction(nn.Module):
    """One SevenNet interaction block (self-connection, linear, convolution, linear, gate)."""

    config: SevenNetConfig
    layer: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats, sh, edge_feats, senders, edge_mask):
        cfg = self.config
        irreps_in = {ir: mul for mul, ir in irreps_list(cfg.node_irreps[self.layer])}
        irreps_out = irreps_list(cfg.node_irreps[self.layer + 1])
        lmax_out = max(int(ir[:-1]) for _, ir in irreps_out)
        target = tuple(nequip.even_irrep(l) for l in range(lmax_out + 1))
        paths = nequip.convolution_paths(tuple(irreps_in), cfg.lmax, target)
        gate_in = gate_input(irreps_out)

        sc = Linear(
            tuple((ir, (irreps_in[ir], mul)) for ir, mul in gate_in.items() if ir in irreps_in),
            self.param_dtype,
            name="self_connection",
        )(feats)
        x = Linear(tuple((ir, (mul, mul)) for ir, mul in irreps_in.items()), self.param_dtype, name="linear_1")(feats)
        n_weights = sum(irreps_in[p.ir_in] for p in paths)
        sizes = (cfg.num_bessel,) + tuple(cfg.radial_mlp) + (n_weights,)
        weights = RadialMLP(sizes, cfg.activation_constant, self.param_dtype, name="radial_mlp")(edge_feats)
        messages = eq.convolution_messages(x, senders, sh, weights * edge_mask[:, None], paths)
        messages = {ir: m / cfg.conv_denominators[self.layer] for ir, m in messages.items()}
        x = Linear(
            tuple((ir, (messages[ir].shape[1], mul)) for ir, mul in gate_in.items()),
            self.param_dtype,
            name="linear_2",
        )(messages)
        x = nequip.add_features(x, sc)
        return nequip.gate(x, [ir for _, ir in irreps_out if ir != "0e"], cfg.activation_constant)


class Readout(nn.Module):
    """Two linear layers (no activation between) from the last scalars to one number per atom."""

    config: SevenNetConfig
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats) -> jnp.ndarray:
        cfg = self.config
        c = feats["0e"].shape[1]
        h = Linear((("0e", (c, cfg.readout_hidden)),), self.param_dtype, name="linear_1")(feats)
        return Linear((("0e", (cfg.readout_hidden, 1)),), self.param_dtype, name="linear_2")(h)["0e"][:, 0, 0]


class SevenNet(EnergyModel):
    """SevenNet energy model on `jraph.GraphsTuple` batches (see `equitrain_jax.data`)."""

    config: SevenNetConfig
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.config
        channels = irreps_list(cfg.node_irreps[0])[0][0]
        self.species_embedding = self.param(
            "species_embedding", normal(), (cfg.num_elements, channels), self.param_dtype
        )
        self.bessel_frequencies = self.param(
            "bessel_frequencies",
            lambda key, shape, dtype: jnp.arange(1, shape[0] + 1, dtype=dtype) * (math.pi / cfg.r_max),
            (cfg.num_bessel,),
            self.param_dtype,
        )
        self.interactions = [
            Interaction(cfg, t, self.param_dtype, name=f"interactions_{t}") for t in range(cfg.num_interactions)
        ]
        self.readouts = [Readout(cfg, self.param_dtype, name=f"readouts_{h}") for h in range(len(cfg.heads))]

    def node_energies(self, graph: jraph.GraphsTuple) -> jnp.ndarray:
        """Energy of each atom (eV), [n_node]; zero on padding nodes."""
        cfg = self.config
        dtype = graph.nodes["positions"].dtype
        species = graph.nodes["species"]
        geometry = edge_geometry(graph, cfg.lmax, cfg.r_max, towards_sender=True)  # sevenn's edge direction
        edge_mask, lengths, sh = geometry.mask, geometry.lengths, geometry.harmonics
        edge_feats = (
            radial.bessel_basis_frequencies(lengths, self.bessel_frequencies, cfg.r_max)
            * (radial.xplor_cutoff(lengths, cfg.cutoff_on, cfg.r_max) * edge_mask)[:, None]
        )

        feats = {"0e": (self.species_embedding[species] / math.sqrt(cfg.num_elements))[:, :, None]}
        for interaction in self.interactions:
            feats = interaction(feats, sh, edge_feats, graph.senders, edge_mask)
        head_scale, head_shift = cfg.head_scale_shift()
        if len(self.readouts) == 1:
            node_heads = jnp.zeros_like(species)
            readout = self.readouts[0](feats)
        else:  # one readout per head; each atom takes its structure's head
            node_heads = graph.globals["head"][geometry.node_graph]
            per_head = jnp.stack([readout(feats) for readout in self.readouts], axis=1)
            readout = jnp.take_along_axis(per_head, node_heads[:, None], axis=1)[:, 0]

        scale = jnp.asarray(head_scale, dtype)[node_heads, species]
        shift = jnp.asarray(head_shift, dtype)[node_heads, species]
        energies = scale * readout + shift
        return masked_node_energies(graph, energies)
