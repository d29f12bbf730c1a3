"""LoRA: low-rank updates W + (α/r)·A·B of chosen weights, with B = 0 at initialisation.

Every MACE weight multiplies channel (multiplicity) axes only; irrep components are never
touched by a weight, so any update of it keeps the model E(3)-equivariant.  Layouts:

* 2-D weights ``[m, n]`` (per-irrep linears ``[C_in, C_out]``, radial-MLP layers
  ``[h_in, h_out]``, readouts): ``ΔW = (α/r) A B`` with ``A [m, r]``, ``B [r, n]``.
* 3-D element-dependent weights (skip connection ``skip_tp/{ir}`` ``[C_in, Z, C_out]``,
  symmetric-contraction ``weights_ν`` ``[Z, K, C]``): one low-rank factorisation per element over
  the two other axes, ``ΔW[z] = (α/r) A[z] B[z]`` with ``A [Z, m, r]``, ``B [Z, r, n]``.  These
  weights are Z separate maps selected by the atom's one-hot species, so each element gets its
  own low-rank update, like a 2-D linear; an element absent from the fine-tuning data gets no
  gradient on its factors and keeps exactly its pretrained map (a factorisation of the
  matricised tensor would share factors across elements and move all of them).
  Cost Z·r·(m + n) instead of Z·m·n numbers.
* element embeddings ``[Z, C]`` (``node_embedding``, SevenNet's ``species_embedding``,
  MACE-MH-1's ``source_embedding`` / ``target_embedding``): ``ΔW = (α/r) A B`` with
  ``A [Z, r]``, ``B [r, C]``, one row of A per element.  B is shared, so training it moves the
  rows of absent elements too, unless ``elements`` is given (below).

Since absent elements never train, `init` can be given the elements of the fine-tuning data
(``elements``: positions along Z, i.e. in the model config's ``atomic_numbers``): element-dependent
weights then get factors for those elements only (``A [Z', m, r]``, ``B [Z', r, n]``; embeddings
``A [Z', r]``), and their ΔW is scattered into zeros at the other elements, which keep their
pretrained map bit for bit.  The factors drawn are the rows ``elements`` of those drawn for all
elements with the same key, so the present elements train as with factors for all (to rounding).
Cost Z'·r·(m + n): MACE-MP-0 medium (89 elements) fine-tuned on Si with the default targets at
rank 4 trains 33,982 numbers instead of 520,798.

Vectors and scalars among the targets (the biases and LayerNorm parameters of the radial MLPs and
the α, β of MACE-MH-1's non-linear interaction blocks) have no low-rank form: they stay frozen.

The rank of each weight is ``min(rank, m, n)``.  A is drawn from N(0, 1), the scale of the base
weights (their 1/√fan_in normalisation lives in the forward pass); with B = 0 the merged
weights equal the base ones bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from equitrain_jax.adapters.paths import Patterns, add_updates, as_patterns, dotted_path, select

DEFAULT_TARGETS: tuple[str, ...] = ("interactions.*", "products.*", "readouts.*")
"""Every weight except the element embedding: interaction linears, radial MLPs, skip
connections, symmetric contractions, product linears and readouts."""


@struct.dataclass
class LoRAWeight:
    """Factors of one weight's update.  Static, so optimisers see only ``a`` and ``b``: ``scale`` =
    α/r; ``element_axis``: where Z sits in the base weight (None: no element axis);
    ``elements``: the positions along Z that have factors (None: all) and ``num_elements`` Z."""

    a: jnp.ndarray  # [m, r]; element-dependent: [Z', m, r], embeddings [Z', r]
    b: jnp.ndarray  # [r, n]; element-dependent: [Z', r, n], embeddings [r, n]
    scale: float = struct.field(pytree_node=False)
    element_axis: Optional[int] = struct.field(pytree_node=False)
    elements: Optional[tuple[int, ...]] = struct.field(pytree_node=False, default=None)
    num_elements: Optional[int] = struct.field(pytree_node=False, default=None)

    def delta(self) -> jnp.ndarray:
        """ΔW in the layout of the base weight, zero at the elements without factors."""
        product = self.scale * (self.a @ self.b)  # element-dependent and embeddings: Z' first
        if self.elements is not None:
            full = jnp.zeros((self.num_elements,) + product.shape[1:], product.dtype)
            product = full.at[np.asarray(self.elements)].set(product)
        return product if self.element_axis is None else jnp.moveaxis(product, 0, self.element_axis)


EMBEDDINGS: tuple[str, ...] = ("node_embedding", "species_embedding", "source_embedding", "target_embedding")
"""Names of the element-embedding tables ``[Z, C]`` of MACE, SevenNet and MACE-MH-1."""


def element_axis(path: str, shape: tuple[int, ...]) -> Optional[int]:
    """Axis of the element index Z in a weight: 1 for ``skip_tp``, 0 for symmetric-contraction
    weights and element embeddings, None for the other 2-D weights."""
    if len(shape) == 2:
        return 0 if path.split(".")[-1] in EMBEDDINGS else None
    if len(shape) == 3 and ".skip_tp." in f".{path}.":
        return 1
    if len(shape) == 3 and ".symmetric_contraction_" in f".{path}":
        return 0
    raise ValueError(f"no LoRA layout for parameter {path} of shape {shape}")


def init(
    params: Mapping[str, Any],
    rank: int = 4,
    alpha: Optional[float] = None,
    targets: Patterns = DEFAULT_TARGETS,
    key: Optional[jax.Array] = None,
    elements: Optional[Sequence[int]] = None,
) -> dict[str, Any]:
    """LoRA factors for the weights of ``params`` matching ``targets``, nested like ``params``.

    Args:
        params: the model's ``params`` collection.
        rank: r, capped per weight at ``min(m, n)``.
        alpha: α; the update is scaled by α/r (default α = r: scale 1).
        targets: path patterns (see `equitrain_jax.adapters.paths`).
        key: PRNG key for A (default ``PRNGKey(0)``).
        elements: positions along the element axis Z (in the model config's ``atomic_numbers``)
            of the elements the fine-tuning data contain; element-dependent weights get factors
            for these only, and the other elements keep their pretrained maps.  None: all.  A
            weight whose element axis has length 1 (MACE's element-agnostic product) serves
            every element and is adapted whole.

    Raises:
        ValueError: a rank below 1, targets without a weight matrix, or an element position
            outside a weight's element axis.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    if elements is not None:
        elements = tuple(sorted({int(z) for z in elements}))
        if not elements or elements[0] < 0:
            raise ValueError(f"LoRA elements must be positions along the element axis (0, 1, …), got {elements}")
    selected = _matrices(select(params, targets))
    if not selected:
        raise ValueError(f"LoRA targets {list(as_patterns(targets))} match only vectors and scalars, no weight matrix")
    flat, treedef = jax.tree_util.tree_flatten_with_path(selected)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, len(flat))

    def factors(path: str, weight: jnp.ndarray, k: jax.Array) -> LoRAWeight:
        axis = element_axis(path, weight.shape)
        z = None if axis is None else weight.shape[axis]
        per_element = weight.ndim == 3  # one factor pair per element; else one pair (embeddings: rows of A)
        m, n = [s for i, s in enumerate(weight.shape) if i != axis] if per_element else weight.shape
        batch = (z,) if per_element else ()
        r = min(rank, m, n)
        dtype = jnp.asarray(weight).dtype
        a = jax.random.normal(k, batch + (m, r), dtype)
        b = jnp.zeros(batch + (r, n), dtype)
        kept = None if z is None or z == 1 or elements is None or elements == tuple(range(z)) else elements
        if kept is not None:
            if kept[-1] >= z:
                raise ValueError(f"LoRA element position {kept[-1]} is outside the {z} elements of {path} {weight.shape}")
            a = a[np.asarray(kept)]
            b = b[np.asarray(kept)] if per_element else b
        return LoRAWeight(a=a, b=b, scale=float(alpha if alpha is not None else rank) / rank, element_axis=axis,
                          elements=kept, num_elements=None if kept is None else z)

    leaves = [factors(dotted_path(p), w, k) for (p, w), k in zip(flat, keys)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _matrices(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` without its leaves of fewer than two axes (same nesting)."""
    kept = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            sub = _matrices(value)
            if sub:
                kept[key] = sub
        elif jnp.ndim(value) >= 2:
            kept[key] = value
    return kept


def merge(params: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every adapted weight replaced by W + (α/r)·A·B."""
    return add_updates(params, adapters, lambda lora, weight: lora.delta().astype(weight.dtype))
