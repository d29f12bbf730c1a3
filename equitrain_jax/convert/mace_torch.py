"""mace-torch ``.model`` → equitrain-jax model directory.

Every tensor of the torch state dict is either mapped into the JAX parameter tree, read into
`MACEConfig`, or on an explicit list of entries that carry no information (masks, flags, codegen
constants); anything else stops the conversion with its name.  The per-tensor layout lives in one
table, `parameter_mappings`, whose inverse direction `equitrain_jax.convert.to_mace_torch` uses to
write JAX weights back into a mace-torch module.

Longer than most modules (about 540 lines, with MACE-MH-1's blocks) on purpose: it is the one place that knows mace-torch's
layout, and the config it reads, the ignore list and the mapping table check each other (every
tensor is accounted for exactly once), which only holds while they are read side by side.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from equitrain_jax.convert.common import ConversionError, import_torch, to_float, to_numpy
from equitrain_jax.models import equivariant as eq
from equitrain_jax.models.mace import maths
from equitrain_jax.models.mace.config import INTERACTION_BLOCKS, NONLINEAR_BLOCK, MACEConfig

# state-dict entries that hold no weights: output masks, zeroed-path flags, e3nn codegen buffers,
# and buffers whose values are read into the config (checked there) rather than mapped.
IGNORED = (
    r"(^|\.)output_mask$",
    r"(^|\.)weights_(\d+|max)_zeroed$",
    r"(^|\.)_w3j_",
    r"^atomic_numbers$",
    r"^r_max$",
    r"^num_interactions$",
    r"^atomic_energies_fn\.atomic_energies$",
    r"^scale_shift\.(scale|shift)$",
    r"^radial_embedding\.bessel_fn\.(bessel_weights|r_max|prefactor)$",
    r"^radial_embedding\.cutoff_fn\.(p|r_max)$",
    r"^radial_embedding\.distance_transform\.(q|p|a|alpha|covalent_radii)$",
    r"^pair_repulsion_fn\.(c|p|covalent_radii|a_exp|a_prefactor)$",
    r"^products\.\d+\.symmetric_contractions\.contractions\.\d+\.U_matrix_\d+$",
)

UNSUPPORTED_FLAGS = (
    "use_so3",
    "use_last_readout_only",
    "keep_last_layer_irreps",
    "lammps_mliap",
)


def load_torch_model(path: str | Path):
    """Load a pickled mace-torch model, normalising cuEquivariance checkpoints to e3nn layout."""
    torch = import_torch(require_mace=True)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle, zip and torch errors all mean "not a model file"
        raise ConversionError(f"{path} is not a mace-torch model file: {error}") from error
    if isinstance(model, dict) and "model" in model:
        model = model["model"]
    if not isinstance(model, torch.nn.Module):
        raise ConversionError(f"{path} holds a {type(model).__name__}, not a mace-torch model")
    return normalise_cueq(model)


def normalise_cueq(model):
    """Convert cuEquivariance-layout modules back to e3nn with mace's own converter."""
    cueq = getattr(model, "cueq_config", None)
    uses_cueq = cueq is not None and getattr(cueq, "enabled", False)
    uses_cueq = uses_cueq or any("cuequivariance" in type(m).__module__ for m in model.modules())
    if not uses_cueq:
        return model
    from mace.cli.convert_cueq_e3nn import run

    torch = import_torch()
    previous = torch.get_default_dtype()
    try:
        return run(model, return_model=True)
    finally:
        torch.set_default_dtype(previous)


def _irrep_name(ir) -> str:
    return f"{ir.l}{'e' if ir.p == 1 else 'o'}"


def _activation_constant(act, where: str) -> float:
    """The normalize2mom constant of an e3nn-normalised SiLU."""
    torch = import_torch()
    f = getattr(act, "f", None)
    if f is not torch.nn.functional.silu:
        raise ConversionError(f"{where}: activation {f!r} is not SiLU")
    return 1.0 if getattr(act, "_is_id", False) else float(act.cst)


def config_from_torch(model) -> MACEConfig:
    """Read architecture and constants from a mace-torch MACE/ScaleShiftMACE module."""
    name = type(model).__name__
    if name not in ("MACE", "ScaleShiftMACE"):
        raise ConversionError(f"model class {name} is not supported (MACE or ScaleShiftMACE)")
    for flag in UNSUPPORTED_FLAGS:
        if getattr(model, flag, False):
            raise ConversionError(f"option {flag}=True is not supported")
    for attribute in ("joint_embedding", "embedding_readout"):
        if hasattr(model, attribute):
            raise ConversionError(f"option {attribute} (embedding_specs) is not supported")

    radial = model.radial_embedding
    if type(radial.bessel_fn).__name__ != "BesselBasis":
        raise ConversionError(f"radial basis {type(radial.bessel_fn).__name__} is not supported")
    if any(p.requires_grad for p in radial.bessel_fn.parameters()):
        raise ConversionError("trainable Bessel weights are not supported")
    n_interactions = len(model.interactions)
    blocks = [type(block).__name__ for block in model.interactions]
    for block in blocks:
        if block not in INTERACTION_BLOCKS:
            raise ConversionError(f"interaction block {block} is not supported")
    if len(set(blocks[1:])) > 1:
        raise ConversionError(f"layers after the first use different blocks: {blocks[1:]}")
    for readout in model.readouts:
        if type(readout).__name__ not in ("LinearReadoutBlock", "NonLinearReadoutBlock"):
            raise ConversionError(f"readout {type(readout).__name__} is not supported")
    if len(model.readouts) != n_interactions:
        raise ConversionError("one readout per interaction is required")
    sh_irreps = [_irrep_name(ir) for _, ir in model.spherical_harmonics.irreps_out]
    max_ell = len(sh_irreps) - 1
    natural = [f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(max_ell + 1)]
    if sh_irreps != natural:
        raise ConversionError(f"spherical harmonics {sh_irreps} are not the natural-parity set")

    hidden = model.interactions[1].node_feats_irreps if n_interactions > 1 else model.products[0].linear.irreps_out
    odd = [_irrep_name(ir) for _, ir in hidden if ir.p != (-1) ** ir.l]
    if odd:
        raise ConversionError(f"odd-parity hidden irreps {odd} (in {hidden}) are not supported")
    heads = tuple(getattr(model, "heads", None) or ["Default"])
    n_heads = len(heads)
    atomic_numbers = [int(z) for z in model.atomic_numbers]
    e0 = np.atleast_2d(to_numpy(model.atomic_energies_fn.atomic_energies))
    if e0.shape != (n_heads, len(atomic_numbers)):
        raise ConversionError(f"atomic energies of shape {e0.shape}, expected {(n_heads, len(atomic_numbers))}")
    if name == "ScaleShiftMACE":
        scale = np.broadcast_to(np.atleast_1d(to_numpy(model.scale_shift.scale)), (n_heads,))
        shift = np.broadcast_to(np.atleast_1d(to_numpy(model.scale_shift.shift)), (n_heads,))
    else:
        scale, shift = np.ones(n_heads), np.zeros(n_heads)

    avg = {float(block.avg_num_neighbors) for block in model.interactions}
    if len(avg) != 1:
        raise ConversionError(f"layers use different avg_num_neighbors {sorted(avg)}")
    radial_mlp = tuple(int(h) for h in model.interactions[0].conv_tp_weights.hs[1:-1])
    radial_cst = MACEConfig.radial_activation_constant  # only e3nn's FullyConnectedNet normalises SiLU
    for i, block in enumerate(model.interactions):
        if tuple(int(h) for h in block.conv_tp_weights.hs[1:-1]) != radial_mlp:
            raise ConversionError(f"interactions.{i}: radial MLP {block.conv_tp_weights.hs} differs from layer 0's")
        if blocks[i] != NONLINEAR_BLOCK:
            radial_cst = _activation_constant(block.conv_tp_weights[0].act, f"interactions.{i}.conv_tp_weights")
    gate_csts = {_gate_constants(block, f"interactions.{i}") for i, block in enumerate(model.interactions)
                 if blocks[i] == NONLINEAR_BLOCK}
    if len(gate_csts) > 1:
        raise ConversionError(f"layers use different gate activation constants {sorted(gate_csts)}")
    agnostic = {bool(getattr(block, "use_agnostic_product", False)) for block in [model, *model.products]}
    if len(agnostic) != 1:
        raise ConversionError("use_agnostic_product differs between the model and its product blocks")
    edge_irreps = getattr(model, "edge_irreps", None)
    last = model.readouts[-1]
    if type(last).__name__ == "NonLinearReadoutBlock":
        readout_channels = last.hidden_irreps.count((0, 1)) // n_heads
        readout_cst = _activation_constant(last.non_linearity.acts[0], "readouts.-1.non_linearity")
    else:
        readout_channels, readout_cst = 16, 1.0
    correlation = tuple(
        len(product.symmetric_contractions.contractions[0].weights) + 1 for product in model.products
    )

    transform, agnesi, soft_alpha = None, MACEConfig.agnesi, MACEConfig.soft_alpha
    covalent_table = None
    if hasattr(radial, "distance_transform"):
        t = radial.distance_transform
        transform = {"AgnesiTransform": "Agnesi", "SoftTransform": "Soft"}.get(type(t).__name__)
        if transform is None:
            raise ConversionError(f"distance transform {type(t).__name__} is not supported")
        if transform == "Agnesi":
            agnesi = (to_float(t.q), to_float(t.p), to_float(t.a))
        else:
            soft_alpha = to_float(t.alpha)
        covalent_table = to_numpy(t.covalent_radii)
    zbl = {}
    if hasattr(model, "pair_repulsion_fn"):
        fn = model.pair_repulsion_fn
        if int(fn.p) != int(radial.cutoff_fn.p):
            raise ConversionError(f"ZBL envelope p={int(fn.p)} differs from the radial p={int(radial.cutoff_fn.p)}")
        zbl = dict(
            pair_repulsion=True,
            zbl_a_prefactor=to_float(fn.a_prefactor),
            zbl_a_exponent=to_float(fn.a_exp),
            zbl_coefficients=tuple(float(c) for c in to_numpy(fn.c)),
        )
        covalent_table = to_numpy(fn.covalent_radii) if covalent_table is None else covalent_table
    if covalent_table is None:
        from ase.data import covalent_radii as covalent_table

    return MACEConfig(
        atomic_numbers=tuple(atomic_numbers),
        r_max=to_float(model.r_max),
        num_bessel=len(radial.bessel_fn.bessel_weights),
        num_polynomial_cutoff=int(radial.cutoff_fn.p),
        max_ell=max_ell,
        hidden_irreps=str(hidden).replace(" ", ""),
        num_interactions=n_interactions,
        correlation=correlation,
        interaction_first=blocks[0],
        interaction=blocks[-1],
        readout_mlp_channels=int(readout_channels),
        radial_mlp=radial_mlp,
        avg_num_neighbors=avg.pop(),
        model_class=name,
        heads=heads,
        atomic_energies=tuple(tuple(float(e) for e in row) for row in e0),
        scale=tuple(float(s) for s in scale),
        shift=tuple(float(s) for s in shift),
        apply_cutoff=bool(getattr(radial, "apply_cutoff", True)),
        distance_transform=transform,
        agnesi=agnesi,
        soft_alpha=soft_alpha,
        covalent_radii=tuple(float(covalent_table[z]) for z in atomic_numbers),
        radial_activation_constant=radial_cst,
        readout_activation_constant=readout_cst,
        edge_irreps=None if edge_irreps is None else str(edge_irreps).replace(" ", ""),
        edge_irreps_first=bool(getattr(model, "use_edge_irreps_first", False)) and edge_irreps is not None,
        agnostic_product=agnostic.pop(),
        **({"gate_activation_constants": gate_csts.pop()} if gate_csts else {}),
        **zbl,
    )


def _gate_constants(block, where: str) -> tuple[float, float]:
    """(SiLU, sigmoid) normalisation constants of a non-linear block's gate, after checking that
    its input is [C scalars, one gate per gated channel in target order, gated irreps]."""
    torch = import_torch()
    gate = block.equivariant_nonlin
    target = block.target_irreps
    c = target.count((0, 1))
    n_gated = sum(mul for mul, ir in target if ir.l > 0)
    expected_in = [(c + n_gated, "0e")] + [(mul, _irrep_name(ir)) for mul, ir in target if ir.l > 0]
    irreps_in = [(mul, _irrep_name(ir)) for mul, ir in gate.irreps_in]
    irreps_out = [(mul, _irrep_name(ir)) for mul, ir in gate.irreps_out]
    if irreps_in != expected_in or irreps_out != [(mul, _irrep_name(ir)) for mul, ir in target]:
        raise ConversionError(f"{where}: gate {gate.irreps_in} -> {gate.irreps_out} is not the expected split")
    if type(gate).__name__ == "GatedEquivariantBlock":
        acts = [(gate._act_scalar, gate._scalar_cst), (gate._act_gate, gate._gate_cst)]
    elif type(gate).__name__ == "Gate":  # e3nn's, in files pickled by older mace-torch
        acts = [(gate.act_scalars.acts[0].f, gate.act_scalars.acts[0].cst), (gate.act_gates.acts[0].f, gate.act_gates.acts[0].cst)]
    else:
        raise ConversionError(f"{where}: gate {type(gate).__name__} is not supported")
    allowed = {"SiLU": (torch.nn.functional.silu,), "sigmoid": (torch.sigmoid, torch.nn.functional.sigmoid)}
    for (f, _), (name, functions) in zip(acts, allowed.items()):
        if not any(f is g for g in functions):
            raise ConversionError(f"{where}: gate activation {f!r} is not {name}")
    return float(acts[0][1]), float(acts[1][1])


@dataclasses.dataclass(frozen=True)
class TensorMapping:
    """One torch state-dict entry and the JAX parameter subtree it becomes.

    ``to_jax`` takes the torch tensor as a numpy array and returns the subtree at ``jax_path`` in
    ``params`` (an array, or a dict of arrays keyed by irrep); ``to_torch`` is its exact inverse.
    Both only reshape, slice, concatenate and multiply by ±1, so a round trip is bit-exact.
    """

    torch_name: str
    jax_path: tuple[str, ...]
    to_jax: Callable[[np.ndarray], Any]
    to_torch: Callable[[Any], np.ndarray]


def _same(x):
    return x


def _identity(torch_name: str, jax_path: tuple[str, ...]) -> TensorMapping:
    return TensorMapping(torch_name, jax_path, _same, _same)


def _linear(module, prefix: str, jax_path: tuple[str, ...]) -> TensorMapping:
    """e3nn o3.Linear ↔ {irrep_out: [Σ mul_in, mul_out]}.

    torch's flat weight holds one (mul_in, mul_out) block per instruction; the blocks into one
    output irrep are stacked along the input axis in instruction order.
    """
    if getattr(module, "biases", None) is not None and any(ins.i_in == -1 for ins in module.instructions):
        raise ConversionError(f"{prefix}: linear biases are not supported")
    layout = [(_irrep_name(module.irreps_out[ins.i_out].ir), tuple(ins.path_shape)) for ins in module.instructions]

    def to_jax(weight: np.ndarray) -> dict[str, np.ndarray]:
        flat = weight.reshape(-1)
        blocks: dict[str, list[np.ndarray]] = {}
        offset = 0
        for name, shape in layout:
            size = int(np.prod(shape))
            blocks.setdefault(name, []).append(flat[offset : offset + size].reshape(shape))
            offset += size
        if offset != flat.size:
            raise ConversionError(f"{prefix}: {flat.size - offset} weights left after the instructions")
        return {name: np.concatenate(bs, axis=0) for name, bs in blocks.items()}

    def to_torch(weights: dict[str, np.ndarray]) -> np.ndarray:
        rows = dict.fromkeys(weights, 0)
        blocks = []
        for name, shape in layout:
            blocks.append(weights[name][rows[name] : rows[name] + shape[0]].reshape(-1))
            rows[name] += shape[0]
        return np.concatenate(blocks)

    return TensorMapping(f"{prefix}.weight", jax_path, to_jax, to_torch)


def _species_linear(module, prefix: str, jax_path: tuple[str, ...]) -> TensorMapping:
    """FullyConnectedTensorProduct(features, one-hot species) ↔ {irrep: [C_in, Z, C_out]}."""
    layout: dict[str, tuple[int, ...]] = {}
    for ins in module.instructions:
        name = _irrep_name(module.irreps_out[ins.i_out].ir)
        if name in layout or _irrep_name(module.irreps_in1[ins.i_in1].ir) != name:
            raise ConversionError(f"{prefix}: unexpected skip tensor-product path into {name}")
        layout[name] = tuple(ins.path_shape)

    def to_jax(weight: np.ndarray) -> dict[str, np.ndarray]:
        flat = weight.reshape(-1)
        out, offset = {}, 0
        for name, shape in layout.items():
            size = int(np.prod(shape))
            out[name] = flat[offset : offset + size].reshape(shape)
            offset += size
        return out

    def to_torch(weights: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([weights[name].reshape(-1) for name in layout])

    return TensorMapping(f"{prefix}.weight", jax_path, to_jax, to_torch)


def _mlp(module, prefix: str, jax_path: tuple[str, ...], last_layer_signs=None) -> list[TensorMapping]:
    """e3nn FullyConnectedNet ↔ {layer_i: [n_in, n_out]}; ``last_layer_signs`` (±1 per output
    column) multiplies the last layer, in both directions."""
    mappings = []
    for i, layer in enumerate(module):
        if getattr(layer, "var_in", 1) != 1 or getattr(layer, "var_out", 1) != 1:
            raise ConversionError(f"{prefix}.layer{i}: variance scaling is not supported")
        mappings.append(_identity(f"{prefix}.layer{i}.weight", jax_path + (f"layer_{i}",)))
    if last_layer_signs is not None:

        def flip(weight: np.ndarray) -> np.ndarray:
            return weight * last_layer_signs.astype(weight.dtype)[None, :]

        mappings[-1] = TensorMapping(mappings[-1].torch_name, mappings[-1].jax_path, flip, flip)
    return mappings


def _conv_path_signs(block, config: MACEConfig, prefix: str, edge_irreps, irreps_target) -> np.ndarray:
    """Check the edge irreps and tensor-product paths against ours; return the CG sign of each path,
    repeated over its channels.

    e3nn (torch) and e3nn-jax Clebsch–Gordan coefficients differ in sign on some paths; the sign is
    folded into the radial MLP's last layer, which multiplies each path.
    """
    from e3nn import o3

    theirs_edge = tuple((mul, _irrep_name(ir)) for mul, ir in block.edge_irreps)
    if theirs_edge != tuple(edge_irreps):
        raise ConversionError(f"{prefix}: edge irreps {block.edge_irreps} differ from the expected {edge_irreps}")
    tp = block.conv_tp
    ours, _ = maths.convolution_layout(edge_irreps, config.max_ell, irreps_target)
    theirs = [
        eq.ConvolutionPath(
            _irrep_name(tp.irreps_in1[ins.i_in1].ir),
            tp.irreps_in2[ins.i_in2].ir.l,
            _irrep_name(tp.irreps_out[ins.i_out].ir),
        )
        for ins in tp.instructions
    ]
    if list(ours) != theirs:
        raise ConversionError(f"{prefix}.conv_tp: paths {theirs} differ from the expected {list(ours)}")
    signs = []
    for ins, path in zip(tp.instructions, ours):
        l1, l2, l3 = eq.irrep(path.ir_in).l, path.l_sh, eq.irrep(path.ir_out).l
        if ins.connection_mode != "uvu" or not math.isclose(ins.path_weight, math.sqrt(2 * l3 + 1), rel_tol=1e-12):
            raise ConversionError(f"{prefix}.conv_tp: path {path} has mode {ins.connection_mode}, weight {ins.path_weight}")
        torch_cg = o3.wigner_3j(l1, l2, l3).double().numpy()
        jax_cg = eq.clebsch_gordan(l1, l2, l3) / math.sqrt(2 * l3 + 1)
        sign = 1.0 if np.allclose(torch_cg, jax_cg, atol=1e-10) else -1.0
        if not np.allclose(torch_cg, sign * jax_cg, atol=1e-10):
            raise ConversionError(f"{prefix}.conv_tp: Clebsch–Gordan coefficients of {path} do not match")
        signs.append(sign)
    multiplicity = dict((ir, mul) for mul, ir in edge_irreps)
    return np.repeat(np.asarray(signs), [multiplicity[path.ir_in] for path in ours])


def _normalised_mlp(module, prefix: str, jax_path: tuple[str, ...], last_layer_signs=None) -> list[TensorMapping]:
    """mace-torch RadialMLP (torch Linear → LayerNorm → SiLU …, Linear) ↔ {layer_i: {kernel [n_in, n_out],
    bias}, norm_i: {scale, bias}}; ``last_layer_signs`` (±1 per output) multiplies the last layer's
    kernel columns and bias, in both directions."""
    torch = import_torch()
    mappings = []
    linears = [k for k, layer in enumerate(module.net) if isinstance(layer, torch.nn.Linear)]
    norms = [k for k, layer in enumerate(module.net) if isinstance(layer, torch.nn.LayerNorm)]
    for i, k in enumerate(linears):
        signs = last_layer_signs if (i == len(linears) - 1 and last_layer_signs is not None) else None
        flip = _same if signs is None else (lambda w, signs=signs: w * signs.astype(w.dtype)[..., :, None])
        flip_bias = _same if signs is None else (lambda b, signs=signs: b * signs.astype(b.dtype))
        mappings += [
            TensorMapping(f"{prefix}.net.{k}.weight", jax_path + (f"layer_{i}", "kernel"),
                          lambda w, flip=flip: flip(w).T, lambda w, flip=flip: flip(np.asarray(w).T)),
            TensorMapping(f"{prefix}.net.{k}.bias", jax_path + (f"layer_{i}", "bias"), flip_bias, flip_bias),
        ]
    for i, k in enumerate(norms):
        norm = module.net[k]
        if not norm.elementwise_affine or norm.bias is None or not math.isclose(norm.eps, 1e-5) or norms[i] != linears[i] + 1:
            raise ConversionError(f"{prefix}.net.{k}: LayerNorm {norm} is not the expected affine one with eps 1e-5")
        mappings += [
            _identity(f"{prefix}.net.{k}.weight", jax_path + (f"norm_{i}", "scale")),
            _identity(f"{prefix}.net.{k}.bias", jax_path + (f"norm_{i}", "bias")),
        ]
    if len(norms) != len(linears) - 1 or any(
        not isinstance(module.net[k + 1], torch.nn.SiLU) for k in norms
    ):
        raise ConversionError(f"{prefix}: {module.net} is not Linear → LayerNorm → SiLU … → Linear")
    return mappings


def _embedding(prefix: str, jax_path: tuple[str, ...], shape: tuple[int, int]) -> TensorMapping:
    """e3nn Linear on the one-hot species ↔ [Z, C] (the flat weight's single block)."""
    return TensorMapping(f"{prefix}.weight", jax_path, lambda w: w.reshape(shape), lambda w: np.asarray(w).reshape(-1))


def parameter_mappings(model, config: MACEConfig) -> list[TensorMapping]:
    """Every trainable torch weight of ``model`` with its JAX parameter path and layout change.

    The single source of the torch ↔ JAX layout: `variables_from_torch` applies ``to_jax``, the
    export back to mace-torch applies ``to_torch``.
    """
    c, z = config.num_channels, config.num_elements
    mappings = [_embedding("node_embedding.linear", ("node_embedding",), (z, c))]
    hidden = tuple(ir for _, ir in config.hidden_irreps_list)
    irreps_in = ("0e",)
    for i, (block, product, readout) in enumerate(zip(model.interactions, model.products, model.readouts)):
        p, path = f"interactions.{i}", (f"interactions_{i}",)
        target = tuple(_irrep_name(ir) for _, ir in block.target_irreps)
        signs = _conv_path_signs(block, config, p, config.layer_edge_irreps(i, irreps_in), target)
        if type(block).__name__ == NONLINEAR_BLOCK:
            if [int(h) for h in block.density_fn.hs[1:-1]] != [64]:
                raise ConversionError(f"{p}.density_fn: hidden sizes {block.density_fn.hs[1:-1]}, expected [64]")
            names = ("skip_tp", "linear_up", "linear_res", "linear_1", "linear_2")
            mappings += [_linear(getattr(block, name), f"{p}.{name}", path + (name,)) for name in names]
            mappings += [
                _embedding(f"{p}.source_embedding", path + ("source_embedding",), (z, c)),
                _embedding(f"{p}.target_embedding", path + ("target_embedding",), (z, c)),
                _identity(f"{p}.alpha", path + ("alpha",)),
                _identity(f"{p}.beta", path + ("beta",)),
            ]
            mappings += _normalised_mlp(block.conv_tp_weights, f"{p}.conv_tp_weights", path + ("radial_mlp",), signs)
            mappings += _normalised_mlp(block.density_fn, f"{p}.density_fn", path + ("density_mlp",))
        else:
            mappings += [
                _linear(block.linear_up, f"{p}.linear_up", path + ("linear_up",)),
                _linear(block.linear, f"{p}.linear", path + ("linear",)),
                _species_linear(block.skip_tp, f"{p}.skip_tp", path + ("skip_tp",)),
            ]
            mappings += _mlp(block.conv_tp_weights, f"{p}.conv_tp_weights", path + ("radial_mlp",), signs)
            if hasattr(block, "density_fn"):
                mappings += _mlp(block.density_fn, f"{p}.density_fn", path + ("density_mlp",))

        p, path = f"products.{i}", (f"products_{i}",)
        mappings.append(_linear(product.linear, f"{p}.linear", path + ("linear",)))
        sc = product.symmetric_contractions
        for k, (_, ir) in enumerate(sc.irreps_out):
            q, sc_path = f"{p}.symmetric_contractions.contractions.{k}", path + (f"symmetric_contraction_{_irrep_name(ir)}",)
            corr = sc.contractions[k].correlation
            mappings.append(_identity(f"{q}.weights_max", sc_path + (f"weights_{corr}",)))
            mappings += [_identity(f"{q}.weights.{j}", sc_path + (f"weights_{corr - 1 - j}",)) for j in range(corr - 1)]

        p, path = f"readouts.{i}", (f"readouts_{i}",)
        if type(readout).__name__ == "LinearReadoutBlock":
            mappings.append(_linear(readout.linear, f"{p}.linear", path + ("linear",)))
        else:
            mappings += [
                _linear(readout.linear_1, f"{p}.linear_1", path + ("linear_1",)),
                _linear(readout.linear_2, f"{p}.linear_2", path + ("linear_2",)),
            ]
        irreps_in = hidden
    return mappings


def _symmetric_contraction_constants(product) -> dict[str, Any]:
    """The stored U matrices of one product block, in the sparse form of `compress_coupling`."""
    constants = {}
    sc = product.symmetric_contractions
    for k, (_, ir) in enumerate(sc.irreps_out):
        contraction = sc.contractions[k]
        compressed = {}
        for nu in range(1, contraction.correlation + 1):
            u = to_numpy(getattr(contraction, f"U_matrix_{nu}"))
            monomials, coupling = maths.compress_coupling(u if u.ndim == nu + 2 else u[None])
            compressed[f"monomials_{nu}"], compressed[f"coupling_{nu}"] = monomials, coupling
        constants[f"symmetric_contraction_{_irrep_name(ir)}"] = compressed
    return constants


def variables_from_torch(model, config: MACEConfig) -> dict[str, Any]:
    """Map every torch parameter and U-matrix buffer into {'params': …, 'constants': …}."""
    tensors = model.state_dict()
    params: dict[str, Any] = {}
    used = set()
    for mapping in parameter_mappings(model, config):
        if mapping.torch_name not in tensors:
            raise ConversionError(f"expected parameter {mapping.torch_name} is missing from the torch model")
        used.add(mapping.torch_name)
        tree = params
        for key in mapping.jax_path[:-1]:
            tree = tree.setdefault(key, {})
        tree[mapping.jax_path[-1]] = mapping.to_jax(to_numpy(tensors[mapping.torch_name]))
    left = [
        k for k, v in tensors.items()
        if k not in used and v.numel() > 0 and not any(re.search(p, k) for p in IGNORED)
    ]
    if left:
        raise ConversionError(f"torch parameters not mapped to JAX: {left}")
    constants = {f"products_{i}": _symmetric_contraction_constants(product) for i, product in enumerate(model.products)}
    return {"params": params, "constants": constants}


def convert_model(model) -> tuple[MACEConfig, dict[str, Any]]:
    """torch module → (config, variables as numpy arrays in the torch model's dtype)."""
    config = config_from_torch(model)
    return config, variables_from_torch(model, config)
