"""The third-order term of the loss: the model's third derivative contracted with two directions,
Φ3_model[u, v], against phono3py's fitted fc3 contracted the same way.

Φ3[u, v]_kc = Σ_ia,jb ∂³E/∂R_ia ∂R_jb ∂R_kc u_ia v_jb is one ``jax.jvp`` of a Hessian-vector
product (`equitrain_jax.models.quantities.third_order_product`) at the equilibrium supercell, so
the term is exact: no finite differences of the model, no anharmonic bias from a displacement
size.  Each step draws K direction pairs per phono3py reference on the host and sends them with
their targets as node fields of one padded graph of the references' supercells::

    nodes["third_order_u"]       [n_node, K, 3]  first direction of pair k on each node (Å)
    nodes["third_order_v"]       [n_node, K, 3]  second direction
    nodes["third_order_targets"] [n_node, K, 3]  Φ3_DFT[u, v] (eV/Å³ per Å² of u and v)
    nodes["third_order_mask"]    [n_node, K]     True on real atoms of items whose pair k is real

As for the Hessian term (`equitrain_jax.train.phonon_data`), pair k of a batch is one pair of
tangents over all nodes holding each item's own k-th pair: the third derivative of a batch is
block-diagonal across its structures.  Every direction of an item of N atoms has length √(3N),
so with random pairs the mean squared residual per component estimates ‖Φ3_model − Φ3_DFT‖²_F / 3N.
The loss is pooled as sums and counts like the other terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from equitrain_jax.data import device_arrays, pad_graph
from equitrain_jax.models.quantities import NodeEnergyFn, third_order_product
from equitrain_jax.train.config import DEFAULT_THIRD_ORDER_DIRECTIONS, DEFAULT_THIRD_ORDER_MODE, THIRD_ORDER_MODES
from equitrain_jax.train.config import ThirdOrderLossConfig
from equitrain_jax.train.hessian_loss import over_tangents
from equitrain_jax.train.loss import pointwise
from equitrain_jax.train.phonon_data import PhononBatches
from equitrain_jax.train.third_order_data import ThirdOrderDataError, ThirdOrderItem

ThirdOrderProduct = Callable[[Any, jraph.GraphsTuple, jnp.ndarray, jnp.ndarray], jnp.ndarray]
"""``product(variables, graph, u [K, n_node, 3], v [K, n_node, 3]) -> [K, n_node, 3]`` eV/Å³: the
third derivative of the summed energy of a padded graph contracted with each pair, at the graph's
positions."""


def model_third_order(node_energy_fn: NodeEnergyFn, sequential: bool = True) -> ThirdOrderProduct:
    """The `ThirdOrderProduct` of a model: `third_order_product` of the one energy function.

    ``sequential`` (the default): one pair after another (`jax.lax.map`), each product
    rematerialised (`jax.checkpoint`) in the reverse pass of the training loss, which then holds one
    pair's intermediates at the price of recomputing its product.  ``sequential=False``: vmapped
    over the K pairs (the primal and reverse pass once, K forward-over-forward tangents at once),
    whose reverse pass keeps every pair's intermediates.  Same values, as for the Hessian term
    (`equitrain_jax.train.hessian_loss.model_hvp`).
    """

    def one(variables: Any, graph: jraph.GraphsTuple, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
        positions = graph.nodes["positions"]
        return third_order_product(node_energy_fn, variables, graph, positions, u.astype(positions.dtype),
                                   v.astype(positions.dtype))

    return over_tangents(one, sequential)


def third_order_products(product: ThirdOrderProduct, variables: Any, graph: jraph.GraphsTuple) -> jnp.ndarray:
    """The model's Φ3[u, v] for the batch's pairs, node-major like the targets: [n_node, K, 3] eV/Å³."""
    u = jnp.swapaxes(graph.nodes["third_order_u"], 0, 1)
    v = jnp.swapaxes(graph.nodes["third_order_v"], 0, 1)
    return jnp.swapaxes(product(variables, graph, u, v), 0, 1)


def third_order_loss_sums(products: jnp.ndarray, graph: jraph.GraphsTuple,
                          config: ThirdOrderLossConfig) -> dict[str, jnp.ndarray]:
    """Sum of the pointwise loss over real components and their count (``third_order_loss``,
    ``third_order_count``); pool them, then `combine_third_order_loss`."""
    residual = products - graph.nodes["third_order_targets"]
    mask = graph.nodes["third_order_mask"] & graph.nodes["mask"][:, None]
    mask = jnp.broadcast_to(mask[..., None], residual.shape)
    return {
        "third_order_loss": jnp.sum(jnp.where(mask, pointwise(residual, config), 0.0)),
        "third_order_count": jnp.sum(mask).astype(residual.dtype),
    }


def combine_third_order_loss(sums: dict[str, jnp.ndarray], config: ThirdOrderLossConfig) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(weight × mean, mean) of pooled `third_order_loss_sums`; 0 when no component was seen."""
    mean = sums["third_order_loss"] / jnp.maximum(sums["third_order_count"], 1)
    return config.weight * mean, mean


# ---------------------------------------------------------------------------- direction pairs


def pair_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of a step's pairs: a function of (seed, epoch, step) only (a resumed run draws
    the same pairs), a stream apart from the Hessian term's directions."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(step), 3]))


def sample_pairs(item: ThirdOrderItem, k: int, mode: str, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """K direction pairs of one item, their targets Φ3_DFT[u, v] and which are real.

    Modes (`THIRD_ORDER_MODES`; every direction has length √(3N)): ``"random"``, independent
    Gaussian directions normalised; ``"phono3py"``, phono3py's displacement pairs, all of them if
    P ≤ K (the rest masked), else K drawn without replacement.

    Returns:
        u, v [K, N, 3] (Å), targets [K, N, 3] (eV/Å³ per Å² of u and v), mask [K] (bool).
    """
    if mode not in THIRD_ORDER_MODES:
        raise ValueError(f"third-order mode must be one of {tuple(THIRD_ORDER_MODES)}, got {mode!r}")
    if k < 1:
        raise ValueError(f"the number of direction pairs must be at least 1, got {k}")
    n = item.n_atoms
    if mode == "random":
        u, v = rng.standard_normal((2, k, n, 3))
    else:
        if len(item.pairs) == 0:
            raise ThirdOrderDataError(f"{item.source}: mode 'phono3py' needs displaced pairs; the data set has none")
        picks = np.arange(len(item.pairs)) if len(item.pairs) <= k else np.sort(rng.choice(len(item.pairs), k, False))
        u, v = item.pairs[picks, 0], item.pairs[picks, 1]
    u, v = (np.sqrt(3 * n) * x / np.linalg.norm(x, axis=(1, 2), keepdims=True) for x in (u, v))
    count = len(u)
    pairs = np.zeros((2, k, n, 3))
    pairs[0, :count], pairs[1, :count] = u, v
    targets = np.zeros((k, n, 3))
    targets[:count] = item.contracted(u, v)
    return pairs[0], pairs[1], targets, np.arange(k) < count


def with_pairs(item: ThirdOrderItem, graph: jraph.GraphsTuple, sampled: tuple[np.ndarray, ...]) -> jraph.GraphsTuple:
    """The item's graph with its pairs, targets and mask (`sample_pairs`) as node fields."""
    if int(np.sum(graph.n_node)) != item.n_atoms:
        raise ValueError(f"{item.source}: graph has {int(np.sum(graph.n_node))} nodes for a "
                         f"{item.n_atoms}-atom supercell")
    u, v, targets, mask = sampled
    return graph._replace(nodes={
        **graph.nodes,
        "third_order_u": np.swapaxes(u, 0, 1),
        "third_order_v": np.swapaxes(v, 0, 1),
        "third_order_targets": np.swapaxes(targets, 0, 1),
        "third_order_mask": np.broadcast_to(mask, (item.n_atoms, len(mask))).copy(),
    })


class ThirdOrderBatches(PhononBatches):
    """The phono3py references of a run in fixed groups of ``batch_size``, each step's group with
    freshly drawn pairs (`sample_pairs`, from `pair_rng`), padded to one shape and split over
    ``n_shards`` exactly as `PhononBatches` does for the Hessian term.

    Args:
        items: the references (`ThirdOrderItem`); ``graphs``: their unpadded graphs
            (`equitrain_jax.train.phonon_data.phonon_graph` of each item).
        k, mode: pairs per item and step, and how they are chosen.
    """

    def __init__(self, items: Sequence[ThirdOrderItem], graphs: Sequence[jraph.GraphsTuple], batch_size: int,
                 k: int = DEFAULT_THIRD_ORDER_DIRECTIONS, mode: str = DEFAULT_THIRD_ORDER_MODE, seed: int = 0,
                 n_shards: int = 1, dtype: Any = np.float64):
        for item in items:
            sample_pairs(item, k, mode, pair_rng(seed, 0, 0))  # refuses what the mode cannot draw
        super().__init__(items, graphs, batch_size, k, "random", seed, n_shards, dtype)
        self.mode = mode

    def batch(self, index: int, epoch: int, step: int) -> jraph.GraphsTuple:
        """Group ``index`` with the pairs of (seed, ``epoch``, ``step``), padded to `shape`, as device
        arrays (stacked over shards when ``n_shards`` > 1)."""
        group = self.groups[index]
        rng = pair_rng(self.seed, epoch, step)
        labelled = {i: with_pairs(self.items[i], self.graphs[i], sample_pairs(self.items[i], self.k, self.mode, rng))
                    for i in group}
        graphs = [labelled.get(i, graph) for i, graph in enumerate(self.graphs)]
        padded = [pad_graph(g, *self.shape) for g in self._shard_graphs(group, graphs)]
        if self.n_shards == 1:
            return device_arrays(padded[0], self.dtype)
        return device_arrays(jax.tree_util.tree_map(lambda *xs: np.stack(xs), *padded), self.dtype)

    def digest_arrays(self) -> list:
        """What the data are, for a run's fingerprint: per item its supercell, fc3, fc2 and forces."""
        return [[np.asarray(item.supercell.numbers), item.supercell.positions, item.supercell.cell.array,
                 item.fc3, item.fc2, item.displacements, item.forces] for item in self.items]


__all__ = [
    "ThirdOrderBatches",
    "ThirdOrderProduct",
    "combine_third_order_loss",
    "model_third_order",
    "pair_rng",
    "sample_pairs",
    "third_order_loss_sums",
    "third_order_products",
    "with_pairs",
]
