"""equitrain-jax model → mace-torch ``.model``: the original torch module carrying the JAX weights.

The inverse of `mace_torch.variables_from_torch`, from the same table (`parameter_mappings`): each
weight goes back through its ``to_torch`` (reshapes, concatenations and ±1 signs only, so an
unchanged model comes back bit for bit), in the template's dtype.  The per-head constants the JAX
side keeps in `MACEConfig` and mace-torch keeps as buffers (E0s, scale, shift) are written too.
Everything else (U matrices, radial and ZBL constants, masks) stays the template's, which is
sound because the model's architecture is checked to be the template's first.

A model whose heads differ from the template's (a multi-head fine-tune has one more) is written into
a new ScaleShiftMACE built from the template's own configuration (mace-torch's
``extract_config_mace_model``) with the model's heads; every tensor that does not depend on the
heads (U matrices, constants, and the weights before the readouts) is carried over from the
template first.

cuEquivariance templates are exported in the e3nn layout that the conversion normalises them to;
mace-torch's ``mace.cli.convert_e3nn_cueq`` turns the result back into cuEquivariance modules.
A LAMMPS model is made from the exported file with mace-torch's ``mace.cli.create_lammps_model``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from equitrain_jax.convert.common import import_torch, to_numpy
from equitrain_jax.convert.mace_torch import config_from_torch, load_torch_model, normalise_cueq, parameter_mappings
from equitrain_jax.models.mace import MACEConfig
from equitrain_jax.models.io import ModelBundle, load_model

E0_BUFFER = "atomic_energies_fn.atomic_energies"
SCALE_SHIFT_BUFFERS = {"scale": "scale_shift.scale", "shift": "scale_shift.shift"}


def check_same_architecture(model: MACEConfig, template: MACEConfig) -> None:
    """Raise a ValueError naming every config field in which the model differs from the template.

    E0s always, and scale and shift of a ScaleShiftMACE, may differ: the export writes them.
    """
    free = {"atomic_energies"}
    if template.model_class == "ScaleShiftMACE":
        free |= set(SCALE_SHIFT_BUFFERS)
    differences = [
        f"{field.name}: model {getattr(model, field.name)!r}, template {getattr(template, field.name)!r}"
        for field in dataclasses.fields(MACEConfig)
        if field.name not in free and getattr(model, field.name) != getattr(template, field.name)
    ]
    if differences:
        raise ValueError("the model does not have the template's architecture: " + "; ".join(differences))


def _head_dependent(name: str) -> bool:
    """State-dict entries whose shape follows the number of heads: readouts, E0s, scale and shift."""
    return name.startswith("readouts.") or name in (E0_BUFFER, *SCALE_SHIFT_BUFFERS.values())


def with_heads(template, heads: tuple[str, ...]):
    """A ScaleShiftMACE of ``template``'s architecture with the heads ``heads``: built by mace-torch
    from the template's configuration, with the template's tensors wherever they do not depend on
    the heads (readouts, E0s, scale and shift keep the new module's initial values)."""
    torch = import_torch()
    name = type(template).__name__
    if name != "ScaleShiftMACE":
        raise ValueError(
            f"the model's heads {list(heads)} differ from the template's {list(template.heads)}; only a "
            f"ScaleShiftMACE template can be rebuilt with other heads, not a {name}"
        )
    from mace.modules.models import ScaleShiftMACE
    from mace.tools.scripts_utils import extract_config_mace_model

    state = template.state_dict()
    config = extract_config_mace_model(template)
    n_heads, n_elements = len(heads), len(template.atomic_numbers)
    config.update(
        heads=list(heads),
        atomic_numbers=[int(z) for z in template.atomic_numbers],
        atomic_energies=np.zeros((n_heads, n_elements)),
        atomic_inter_scale=np.ones(n_heads),
        atomic_inter_shift=np.zeros(n_heads),
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(state[E0_BUFFER].dtype)
    try:
        module = ScaleShiftMACE(**config)
    finally:
        torch.set_default_dtype(previous)
    new_state = module.state_dict()
    differing = sorted(
        name
        for name in set(state) | set(new_state)
        if not _head_dependent(name)
        and (name not in state or name not in new_state or state[name].shape != new_state[name].shape)
    )
    if differing:
        raise ValueError(f"mace-torch rebuilt the template with other tensors: {differing[:5]}")
    module.load_state_dict({**new_state, **{name: t for name, t in state.items() if not _head_dependent(name)}})
    return module.eval()


def _subtree(params: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The model's parameters at ``path`` as numpy arrays; a ValueError names a missing key."""
    tree = params
    for depth, key in enumerate(path):
        if not isinstance(tree, dict) or key not in tree:
            raise ValueError(f"the model has no parameter {'.'.join(path[: depth + 1])}")
        tree = tree[key]
    return jax.tree_util.tree_map(np.asarray, tree)


def _leaf_shapes(tree: Any, prefix: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """{dotted path: shape} of every array in ``tree``, the paths starting with ``prefix``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        ".".join(prefix + tuple(str(k.key) for k in keys)): tuple(np.shape(leaf)) for keys, leaf in leaves
    }


def _tensor(values: np.ndarray, like, name: str):
    """``values`` as a tensor with the dtype and shape of the template tensor ``like``."""
    torch = import_torch()
    values = np.asarray(values)
    if values.size != like.numel():
        raise ValueError(f"{name}: {values.size} values for a tensor of shape {tuple(like.shape)}")
    return torch.as_tensor(np.ascontiguousarray(values.reshape(like.shape))).to(like.dtype)


def with_weights(bundle: ModelBundle, template) -> Any:
    """A copy of the mace-torch module ``template`` carrying the weights and E0s/scale/shift of
    ``bundle``; ``template`` itself is left unchanged (cuEquivariance ones come back as e3nn).
    With other heads than the template's, the copy is `with_heads` of it."""
    module = normalise_cueq(template)  # a new module if cuEquivariance, else the template itself
    if module is template:
        module = copy.deepcopy(template)
    config = config_from_torch(module)
    if tuple(bundle.config.heads) != tuple(config.heads):
        module = with_heads(module, tuple(bundle.config.heads))
        config = config_from_torch(module)
    check_same_architecture(bundle.config, config)
    params = bundle.variables["params"]
    state = module.state_dict()
    updated = dict(state)
    mapped: dict[str, tuple[int, ...]] = {}
    for mapping in parameter_mappings(module, config):
        template_shapes = _leaf_shapes(mapping.to_jax(to_numpy(state[mapping.torch_name])), mapping.jax_path)
        value = _subtree(params, mapping.jax_path)
        shapes = _leaf_shapes(value, mapping.jax_path)
        if shapes != template_shapes:
            raise ValueError(f"parameter shapes {shapes} differ from the template's {template_shapes}")
        mapped.update(shapes)
        updated[mapping.torch_name] = _tensor(mapping.to_torch(value), state[mapping.torch_name], mapping.torch_name)
    unmapped = sorted(set(_leaf_shapes(params, ())) - set(mapped))
    if unmapped:
        raise ValueError(f"model parameters with no place in the template (merge adapters first?): {unmapped}")

    n_heads, n_elements = len(config.heads), config.num_elements
    e0 = np.asarray(bundle.config.atomic_energies or [[0.0] * n_elements] * n_heads)
    updated[E0_BUFFER] = _tensor(e0, state[E0_BUFFER], E0_BUFFER)
    if config.model_class == "ScaleShiftMACE":
        for field, name in SCALE_SHIFT_BUFFERS.items():
            updated[name] = _tensor(np.asarray(getattr(bundle.config, field)), state[name], name)
    module.load_state_dict(updated)
    return module


def export_to_mace_torch(
    model: str | Path | ModelBundle, template: str | Path | Any, output: str | Path
) -> Path:
    """Write ``output``: the mace-torch model ``template`` with the weights of ``model``.

    Args:
        model: an equitrain-jax model directory or `ModelBundle` (e.g. fine-tuned and merged).
        template: the mace-torch ``.model`` file (or ``torch.nn.Module``) it was converted from.
        output: the ``.model`` file to write (a pickled module, as mace-torch saves them).

    Raises:
        ValueError: the model's architecture or elements differ from the template's, its heads
            differ from those of a template that is not a ScaleShiftMACE, or its parameter tree
            does not fit the template (e.g. unmerged adapters).
    """
    torch = import_torch()
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a directory; give the .model file to write")
    bundle = model if isinstance(model, ModelBundle) else load_model(model)
    if not isinstance(template, torch.nn.Module):
        template = load_torch_model(template)
    module = with_weights(bundle, template)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as handle:  # Python's open names the path in an OSError; torch.save's would not
        torch.save(module, handle)
    return output
