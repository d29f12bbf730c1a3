"""mace-torch ``.model`` → equitrain-jax model directory.

The only module that imports torch.  Every tensor of the torch state dict is either mapped into the
JAX parameter tree, read into `MACEConfig`, or on an explicit list of entries that carry no
information (masks, flags, codegen constants); anything else stops the conversion with its name.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from equitrain_jax.models import equivariant as eq
from equitrain_jax.models.config import INTERACTION_BLOCKS, MACEConfig

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
    "use_agnostic_product",
    "use_last_readout_only",
    "use_edge_irreps_first",
    "keep_last_layer_irreps",
    "lammps_mliap",
)


class ConversionError(ValueError):
    """The torch model uses something this converter does not map; the message names it."""


def import_torch():
    """Import mace before e3nn (mace sets the torch.load flag that e3nn 0.4.4 needs)."""
    try:
        import mace  # noqa: F401
        import torch
    except ImportError as error:
        raise ImportError(
            "converting a mace-torch model needs torch and mace-torch: "
            "pip install 'equitrain-jax[torch]'"
        ) from error
    return torch


def load_torch_model(path: str | Path):
    """Load a pickled mace-torch model, normalising cuEquivariance checkpoints to e3nn layout."""
    torch = import_torch()
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


def _item(x) -> float:
    return float(x.detach().cpu().reshape(-1)[0]) if hasattr(x, "detach") else float(x)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy().copy()


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
    if getattr(model, "edge_irreps", None) is not None:
        raise ConversionError(f"option edge_irreps={model.edge_irreps} is not supported")

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
    heads = tuple(getattr(model, "heads", None) or ["Default"])
    n_heads = len(heads)
    atomic_numbers = [int(z) for z in model.atomic_numbers]
    e0 = np.atleast_2d(_numpy(model.atomic_energies_fn.atomic_energies))
    if e0.shape != (n_heads, len(atomic_numbers)):
        raise ConversionError(f"atomic energies of shape {e0.shape}, expected {(n_heads, len(atomic_numbers))}")
    if name == "ScaleShiftMACE":
        scale = np.broadcast_to(np.atleast_1d(_numpy(model.scale_shift.scale)), (n_heads,))
        shift = np.broadcast_to(np.atleast_1d(_numpy(model.scale_shift.shift)), (n_heads,))
    else:
        scale, shift = np.ones(n_heads), np.zeros(n_heads)

    avg = {float(block.avg_num_neighbors) for block in model.interactions}
    if len(avg) != 1:
        raise ConversionError(f"layers use different avg_num_neighbors {sorted(avg)}")
    mlp = model.interactions[0].conv_tp_weights
    radial_mlp = tuple(int(h) for h in mlp.hs[1:-1])
    radial_cst = _activation_constant(mlp[0].act, "interactions.0.conv_tp_weights")
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
            agnesi = (_item(t.q), _item(t.p), _item(t.a))
        else:
            soft_alpha = _item(t.alpha)
        covalent_table = _numpy(t.covalent_radii)
    zbl = {}
    if hasattr(model, "pair_repulsion_fn"):
        fn = model.pair_repulsion_fn
        if int(fn.p) != int(radial.cutoff_fn.p):
            raise ConversionError(f"ZBL envelope p={int(fn.p)} differs from the radial p={int(radial.cutoff_fn.p)}")
        zbl = dict(
            pair_repulsion=True,
            zbl_a_prefactor=_item(fn.a_prefactor),
            zbl_a_exponent=_item(fn.a_exp),
            zbl_coefficients=tuple(float(c) for c in _numpy(fn.c)),
        )
        covalent_table = _numpy(fn.covalent_radii) if covalent_table is None else covalent_table
    if covalent_table is None:
        from ase.data import covalent_radii as covalent_table

    return MACEConfig(
        atomic_numbers=tuple(atomic_numbers),
        r_max=_item(model.r_max),
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
        **zbl,
    )


class _StateDict:
    """Torch state dict that records which entries were used."""

    def __init__(self, module):
        self.tensors = {k: v for k, v in module.state_dict().items()}
        self.used: set[str] = set()

    def take(self, key: str) -> np.ndarray:
        if key not in self.tensors:
            raise ConversionError(f"expected parameter {key} is missing from the torch model")
        self.used.add(key)
        return _numpy(self.tensors[key])

    def check_all_used(self) -> None:
        left = [
            k for k in self.tensors
            if k not in self.used and not any(re.search(p, k) for p in IGNORED)
        ]
        empty = [k for k in left if self.tensors[k].numel() == 0]
        left = [k for k in left if k not in empty]
        if left:
            raise ConversionError(f"torch parameters not mapped to JAX: {left}")


def _linear(sd: _StateDict, module, prefix: str) -> dict[str, np.ndarray]:
    """e3nn o3.Linear → {irrep_out: [Σ mul_in, mul_out]} (input blocks in instruction order)."""
    if getattr(module, "biases", None) is not None and any(ins.i_in == -1 for ins in module.instructions):
        raise ConversionError(f"{prefix}: linear biases are not supported")
    flat = sd.take(f"{prefix}.weight").reshape(-1)
    blocks: dict[str, list[np.ndarray]] = {}
    offset = 0
    for ins in module.instructions:
        size = int(np.prod(ins.path_shape))
        block = flat[offset : offset + size].reshape(ins.path_shape)
        offset += size
        name = _irrep_name(module.irreps_out[ins.i_out].ir)
        blocks.setdefault(name, []).append(block)
    if offset != flat.size:
        raise ConversionError(f"{prefix}: {flat.size - offset} weights left after the instructions")
    return {name: np.concatenate(bs, axis=0) for name, bs in blocks.items()}


def _species_linear(sd: _StateDict, module, prefix: str) -> dict[str, np.ndarray]:
    """FullyConnectedTensorProduct(features, one-hot species) → {irrep: [C_in, Z, C_out]}."""
    flat = sd.take(f"{prefix}.weight").reshape(-1)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for ins in module.instructions:
        size = int(np.prod(ins.path_shape))
        name = _irrep_name(module.irreps_out[ins.i_out].ir)
        if name in out or _irrep_name(module.irreps_in1[ins.i_in1].ir) != name:
            raise ConversionError(f"{prefix}: unexpected skip tensor-product path into {name}")
        out[name] = flat[offset : offset + size].reshape(ins.path_shape)
        offset += size
    return out


def _mlp(sd: _StateDict, module, prefix: str) -> dict[str, np.ndarray]:
    layers = {}
    for i, layer in enumerate(module):
        if getattr(layer, "var_in", 1) != 1 or getattr(layer, "var_out", 1) != 1:
            raise ConversionError(f"{prefix}.layer{i}: variance scaling is not supported")
        layers[f"layer_{i}"] = sd.take(f"{prefix}.layer{i}.weight")
    return layers


def _conv_path_signs(block, config: MACEConfig, prefix: str, irreps_in, irreps_target) -> np.ndarray:
    """Check the edge tensor-product paths against ours; return the CG sign of each path.

    e3nn (torch) and e3nn-jax Clebsch–Gordan coefficients differ in sign on some paths; the sign is
    folded into the radial MLP's last layer, which multiplies each path.
    """
    from e3nn import o3

    tp = block.conv_tp
    ours = eq.convolution_paths(irreps_in, config.max_ell, irreps_target)
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
        jax_cg = eq._coupling(l1, l2, l3) / math.sqrt(2 * l3 + 1)
        sign = 1.0 if np.allclose(torch_cg, jax_cg, atol=1e-10) else -1.0
        if not np.allclose(torch_cg, sign * jax_cg, atol=1e-10):
            raise ConversionError(f"{prefix}.conv_tp: Clebsch–Gordan coefficients of {path} do not match")
        signs.append(sign)
    return np.asarray(signs)


def variables_from_torch(model, config: MACEConfig) -> dict[str, Any]:
    """Map every torch parameter and U-matrix buffer into {'params': …, 'constants': …}."""
    sd = _StateDict(model)
    c = config.num_channels
    params: dict[str, Any] = {"node_embedding": sd.take("node_embedding.linear.weight").reshape(config.num_elements, c)}
    constants: dict[str, Any] = {}
    hidden = tuple(ir for _, ir in config.hidden_irreps_list)
    irreps_in = ("0e",)
    for i, (block, product, readout) in enumerate(zip(model.interactions, model.products, model.readouts)):
        p = f"interactions.{i}"
        target = tuple(_irrep_name(ir) for _, ir in block.target_irreps)
        inter = {
            "linear_up": _linear(sd, block.linear_up, f"{p}.linear_up"),
            "linear": _linear(sd, block.linear, f"{p}.linear"),
            "skip_tp": _species_linear(sd, block.skip_tp, f"{p}.skip_tp"),
            "radial_mlp": _mlp(sd, block.conv_tp_weights, f"{p}.conv_tp_weights"),
        }
        signs = _conv_path_signs(block, config, p, irreps_in, target)
        last_layer = f"layer_{len(inter['radial_mlp']) - 1}"
        inter["radial_mlp"][last_layer] = inter["radial_mlp"][last_layer] * np.repeat(signs, c)[None, :]
        if hasattr(block, "density_fn"):
            inter["density_mlp"] = _mlp(sd, block.density_fn, f"{p}.density_fn")
        params[f"interactions_{i}"] = inter

        p = f"products.{i}"
        prod = {"linear": _linear(sd, product.linear, f"{p}.linear")}
        prod_constants = {}
        sc = product.symmetric_contractions
        for k, (_, ir) in enumerate(sc.irreps_out):
            name, q = _irrep_name(ir), f"{p}.symmetric_contractions.contractions.{k}"
            contraction = sc.contractions[k]
            corr = contraction.correlation
            weights = {f"weights_{corr}": sd.take(f"{q}.weights_max")}
            for j in range(corr - 1):
                weights[f"weights_{corr - 1 - j}"] = sd.take(f"{q}.weights.{j}")
            compressed = {}
            for nu in range(1, corr + 1):
                u = _numpy(getattr(contraction, f"U_matrix_{nu}"))
                monomials, coupling = eq.compress_coupling(u if u.ndim == nu + 2 else u[None])
                compressed[f"monomials_{nu}"], compressed[f"coupling_{nu}"] = monomials, coupling
            prod[f"symmetric_contraction_{name}"] = weights
            prod_constants[f"symmetric_contraction_{name}"] = compressed
        params[f"products_{i}"] = prod
        constants[f"products_{i}"] = prod_constants

        p = f"readouts.{i}"
        if type(readout).__name__ == "LinearReadoutBlock":
            params[f"readouts_{i}"] = {"linear": _linear(sd, readout.linear, f"{p}.linear")}
        else:
            params[f"readouts_{i}"] = {
                "linear_1": _linear(sd, readout.linear_1, f"{p}.linear_1"),
                "linear_2": _linear(sd, readout.linear_2, f"{p}.linear_2"),
            }
        irreps_in = hidden
    sd.check_all_used()
    return {"params": params, "constants": constants}


def convert_model(model) -> tuple[MACEConfig, dict[str, Any]]:
    """torch module → (config, variables as numpy arrays in the torch model's dtype)."""
    config = config_from_torch(model)
    return config, variables_from_torch(model, config)
