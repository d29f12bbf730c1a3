"""SevenNet checkpoint (sevenn ``.pth``) → equitrain-jax model directory.

Reads the checkpoint with torch alone: sevenn is never imported (it needs e3nn ≥ 0.5, which clashes
with mace-torch's e3nn 0.4.4).  The checkpoint is unpickled with torch's restricted
``weights_only`` loader, which admits tensors, numpy arrays and plain containers; a checkpoint that
pickles other objects (sevenn classes, say) stops with a `ConversionError` naming them.

The architecture is rebuilt from the checkpoint's ``config`` and state dict.  Every tensor is mapped
into the JAX parameter tree, read into `SevenNetConfig`, used to fix Clebsch–Gordan signs, or on an
explicit list of tensors without information (empty biases and weights, output masks); anything else
stops the conversion with its name.

Edge tensor-product weights: checkpoints written before sevenn 0.11 store the per-path radial-MLP
outputs in e3nn's instruction order, later ones sorted by output irrep (our order).  The sign of
the Clebsch–Gordan coefficients each checkpoint was trained with is read from its own ``_w3j_*``
constants and folded into the radial MLP's last layer wherever it differs from e3nn-jax's.

Slightly over 350 lines for the same reason as `equitrain_jax.convert.mace_torch`: everything that
knows sevenn's checkpoint layout, kept together so that every tensor is seen to be accounted for.
"""

from __future__ import annotations

import importlib.util
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from equitrain_jax.convert.common import ConversionError, import_torch, to_numpy
from equitrain_jax.models import equivariant as eq
from equitrain_jax.models.equivariant import irreps_list
from equitrain_jax.models.io import save_model
from equitrain_jax.models.sevennet import nequip
from equitrain_jax.models.sevennet.config import SevenNetConfig
from equitrain_jax.models.sevennet.model import gate_input

PRETRAINED = {
    "sevennet-0": "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
}
"""Checkpoints shipped inside the sevenn package, by name (relative to the package directory)."""

PRETRAINED_ALIASES = {"7net-0": "sevennet-0", "sevennet-0_11jul2024": "sevennet-0", "7net-0_11jul2024": "sevennet-0"}

SEVENN_INSTALL = "pip install --no-deps sevenn==0.13.0"

# state-dict entries without weights: output masks; empty biases, convolution weights (they are
# per-edge, from the radial MLP) and gate weights are checked to be empty where they are met.
IGNORED = (r"(^|\.)output_mask$",)
EMPTY = (r"\.linear\.bias$", r"_convolution\.convolution\.weight$", r"_equivariant_gate\.gate\.mul\.weight$")

# config options and the only values this converter supports
SUPPORTED_OPTIONS = {
    "_model_type": ("E3_equivariant_model",),
    "interaction_type": ("nequip",),
    "is_parity": (False,),
    "self_connection_type": ("linear",),
    "use_bias_in_linear": (False,),
    "readout_as_fcn": (False,),
    "act_radial": ("silu",),
    "_normalize_sph": (True,),
    "use_modality": (False,),
}


def pretrained_checkpoint(name: str = "sevennet-0") -> Path:
    """Path of a pretrained checkpoint inside the installed sevenn package, found without importing
    sevenn (``importlib.util.find_spec``).

    Raises:
        ValueError: ``name`` is not a known pretrained model.
        FileNotFoundError: sevenn is not installed (the message gives the install command), or its
            package lacks the checkpoint.
    """
    key = PRETRAINED_ALIASES.get(name.lower(), name.lower())
    if key not in PRETRAINED:
        known = sorted(PRETRAINED) + sorted(PRETRAINED_ALIASES)
        raise ValueError(f"unknown pretrained SevenNet model {name!r}; known names: {known}")
    spec = importlib.util.find_spec("sevenn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the pretrained model {name!r} ships inside the sevenn package, which is not installed; "
            f"install it (without its dependencies, which are not needed) with: {SEVENN_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PRETRAINED[key]
    if not path.is_file():
        raise FileNotFoundError(f"the installed sevenn package has no {PRETRAINED[key]} ({path}); try: {SEVENN_INSTALL}")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict (``config``, ``model_state_dict``, …), unpickled with torch's restricted
    loader plus numpy arrays; raises `ConversionError` for anything else."""
    torch = import_torch()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path} is not a torch checkpoint (not a zip archive)")
    numpy_globals = [
        (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # pickled by numpy 1
        np._core.multiarray._reconstruct,  # by numpy 2
        np.ndarray,
        np.dtype,
        *(type(np.dtype(t)) for t in (np.float32, np.float64, np.int64, np.int32, np.bool_)),
    ]
    try:
        with torch.serialization.safe_globals(numpy_globals):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and torch errors: the restricted loader refused something
        raise ConversionError(f"{path}: cannot read it as a SevenNet checkpoint without sevenn: {error}") from error
    if not (isinstance(checkpoint, dict) and {"config", "model_state_dict"} <= checkpoint.keys()):
        raise ConversionError(f"{path} holds no SevenNet 'config' and 'model_state_dict'")
    return checkpoint


def is_sevennet_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a SevenNet checkpoint this module can read."""
    try:
        read_checkpoint(path)
    except (ConversionError, FileNotFoundError):
        return False
    return True


def _version(text: str) -> tuple[tuple[int, ...], str]:
    parts = str(text).split(".")
    return tuple(int(p) for p in parts[:3]), ".".join(parts[3:])


def instruction_order_weights(version: str) -> bool:
    """Whether a checkpoint of this sevenn version stores edge weights in e3nn instruction order
    (sevenn sorted them by output irrep from 0.11.0, its 0.11.0.dev0 excepted)."""
    number, suffix = _version(version)
    return number < (0, 11, 0) or (number == (0, 11, 0) and suffix == "dev0")


def silu_normalisation() -> float:
    """e3nn's ``normalize2mom`` constant of SiLU, 1/√E[silu(z)²] over its own 10⁶ seeded normal
    samples: the exact number e3nn (torch) multiplies SiLU by."""
    torch = import_torch()
    z = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return float(torch.nn.functional.silu(z).pow(2).mean().pow(-0.5))


class _StateDict:
    """Checkpoint state dict (numpy) that records which entries were used."""

    def __init__(self, tensors):
        self.tensors = {k: to_numpy(v) for k, v in tensors.items()}
        self.used: set[str] = set()

    def take(self, key: str) -> np.ndarray:
        if key not in self.tensors:
            raise ConversionError(f"expected tensor {key} is missing from the checkpoint")
        self.used.add(key)
        return self.tensors[key]

    def check_all_used(self) -> None:
        left = []
        for key, value in self.tensors.items():
            if key in self.used or any(re.search(p, key) for p in IGNORED):
                continue
            if any(re.search(p, key) for p in EMPTY) and value.size == 0:
                continue
            left.append(key)
        if left:
            raise ConversionError(f"checkpoint tensors not mapped to JAX: {left}")


def _check_options(cfg: dict) -> None:
    for key, allowed in SUPPORTED_OPTIONS.items():
        value = cfg.get(key, allowed[0])
        if value not in allowed:
            raise ConversionError(f"SevenNet option {key}={value!r} is not supported (only {allowed})")
    for key in ("act_scalar", "act_gate"):
        if cfg.get(key, {}).get("e") != "silu":
            raise ConversionError(f"SevenNet option {key}={cfg.get(key)!r} is not supported (even activation must be silu)")
    basis = cfg["radial_basis"]
    if basis.get("radial_basis_name") != "bessel":
        raise ConversionError(f"SevenNet radial_basis {basis!r} is not supported (only bessel)")
    cutoff = cfg["cutoff_function"]
    if cutoff.get("cutoff_function_name") != "XPLOR":
        raise ConversionError(f"SevenNet cutoff_function {cutoff!r} is not supported (only XPLOR)")
    if cfg.get("lmax_edge", -1) not in (-1, cfg["lmax"]) or cfg.get("lmax_node", -1) not in (-1, cfg["lmax"]):
        raise ConversionError(f"SevenNet lmax_edge/lmax_node different from lmax={cfg['lmax']} are not supported")
    if not cfg.get("irreps_manual", False):
        raise ConversionError("SevenNet checkpoints without irreps_manual are not supported")
    if cfg.get("cuequivariance_config", {}).get("use", False):
        raise ConversionError("SevenNet checkpoints trained in cuEquivariance layout are not supported")


def _irreps_dict(text: str) -> dict[str, int]:
    merged: dict[str, int] = {}
    for mul, ir in irreps_list(text):
        merged[ir] = merged.get(ir, 0) + mul
    return merged


def config_from_checkpoint(checkpoint: dict[str, Any]) -> SevenNetConfig:
    """`SevenNetConfig` from the checkpoint's ``config`` and the fixed tensors of its state dict."""
    cfg = checkpoint["config"]
    sd = checkpoint["model_state_dict"]
    _check_options(cfg)
    type_map = {int(z): int(i) for z, i in cfg["_type_map"].items()}
    atomic_numbers = tuple(sorted(type_map, key=type_map.get))
    if [type_map[z] for z in atomic_numbers] != list(range(len(atomic_numbers))):
        raise ConversionError(f"SevenNet _type_map {cfg['_type_map']!r} is not a numbering 0…n−1")
    n_layers = cfg["num_convolution_layer"]
    node_irreps = tuple(str(text) for text in cfg["irreps_manual"])
    if len(node_irreps) != n_layers + 1:
        raise ConversionError(f"irreps_manual has {len(node_irreps)} entries for {n_layers} convolution layers")

    def per_element(name: str) -> tuple[float, ...]:
        values = sd[f"rescale_atomic_energy.{name}"].detach().cpu().numpy().reshape(-1)
        if values.size == 1:
            values = np.full(len(atomic_numbers), values[0])
        if values.size != len(atomic_numbers):
            raise ConversionError(f"rescale_atomic_energy.{name} has {values.size} values for {len(atomic_numbers)} elements")
        return tuple(float(v) for v in values)

    readout = sd["reduce_hidden_to_energy.linear.weight"].numel()
    try:
        return SevenNetConfig(
            atomic_numbers=atomic_numbers,
            node_irreps=node_irreps,
            conv_denominators=tuple(float(sd[f"{t}_convolution.denominator"].reshape(-1)[0]) for t in range(n_layers)),
            scale=per_element("scale"),
            shift=per_element("shift"),
            r_max=float(cfg["cutoff"]),
            cutoff_on=float(cfg["cutoff_function"]["cutoff_on"]),
            num_bessel=int(cfg["radial_basis"]["bessel_basis_num"]),
            lmax=int(cfg["lmax"]),
            radial_mlp=tuple(int(h) for h in cfg["weight_nn_hidden_neurons"]),
            readout_hidden=int(readout),
            activation_constant=silu_normalisation(),
        )
    except (ValueError, KeyError) as error:
        raise ConversionError(f"SevenNet checkpoint configuration not supported: {error}") from error


def linear_blocks(flat: np.ndarray, irreps_in: str | list, irreps_out: str | list, where: str) -> dict[str, np.ndarray]:
    """e3nn ``o3.Linear`` weights → {irrep: [Σ mul_in, Σ mul_out]}, the input and output slots of
    each irrep stacked in their order (e3nn orders its instructions input slot first)."""
    slots_in = irreps_list(irreps_in) if isinstance(irreps_in, str) else irreps_in
    slots_out = irreps_list(irreps_out) if isinstance(irreps_out, str) else irreps_out
    flat = flat.reshape(-1)
    blocks: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    offset = 0
    for i, (mul_in, ir_in) in enumerate(slots_in):
        for o, (mul_out, ir_out) in enumerate(slots_out):
            if ir_in != ir_out:
                continue
            blocks.setdefault(ir_in, {})[(i, o)] = flat[offset : offset + mul_in * mul_out].reshape(mul_in, mul_out)
            offset += mul_in * mul_out
    if offset != flat.size:
        raise ConversionError(f"{where}: {flat.size} weights, {offset} expected from {irreps_in} → {irreps_out}")
    out = {}
    for ir, parts in blocks.items():
        rows = sorted({i for i, _ in parts})
        cols = sorted({o for _, o in parts})
        out[ir] = np.concatenate([np.concatenate([parts[(i, o)] for o in cols], axis=1) for i in rows], axis=0)
    return out


def _coupling_sign(sd: _StateDict, prefix: str, path: eq.ConvolutionPath) -> float:
    """Sign between the Clebsch–Gordan coefficients the checkpoint used on ``path`` and e3nn-jax's.

    Paths with l1, l2, l3 > 0 carry their coefficients in the checkpoint (``_w3j_l1_l2_l3``); e3nn
    computes paths with an l = 0 in closed form, δ/√(2l+1).
    """
    l1, l2, l3 = eq.irrep(path.ir_in).l, path.l_sh, eq.irrep(path.ir_out).l
    ours = eq.clebsch_gordan(l1, l2, l3) / math.sqrt(2 * l3 + 1)
    if min(l1, l2, l3) > 0:
        theirs = sd.take(f"{prefix}.convolution._compiled_main_left_right._w3j_{l1}_{l2}_{l3}").astype(np.float64)
        tol = 1e-6
    else:
        l = max(l1, l2, l3)
        theirs = np.eye(2 * l + 1).reshape(ours.shape) / math.sqrt(2 * l + 1)
        tol = 1e-12
    for sign in (1.0, -1.0):
        if np.allclose(theirs, sign * ours, atol=tol):
            return sign
    raise ConversionError(f"{prefix}: Clebsch–Gordan coefficients of path {path} match e3nn-jax's in neither sign")


def variables_from_checkpoint(checkpoint: dict[str, Any], config: SevenNetConfig) -> dict[str, Any]:
    """Map every tensor of the state dict into ``{'params': …, 'constants': {}}`` (numpy float32)."""
    sd = _StateDict(checkpoint["model_state_dict"])
    for t in range(config.num_interactions):
        sd.take(f"{t}_convolution.denominator")  # read into the config
    sd.take("rescale_atomic_energy.scale")
    sd.take("rescale_atomic_energy.shift")
    channels0 = irreps_list(config.node_irreps[0])
    params: dict[str, Any] = {
        "species_embedding": linear_blocks(
            sd.take("onehot_to_feature_x.linear.weight"), [(config.num_elements, "0e")], channels0, "onehot_to_feature_x"
        )["0e"],
        "bessel_frequencies": sd.take("edge_embedding.basis_function.coeffs"),
    }
    in_instruction_order = instruction_order_weights(checkpoint["config"].get("version", "0.0.0"))
    for t in range(config.num_interactions):
        p = f"{t}_"
        irreps_in = _irreps_dict(config.node_irreps[t])
        irreps_out = irreps_list(config.node_irreps[t + 1])
        gate = [(mul, ir) for ir, mul in gate_input(irreps_out).items()]
        lmax_out = max(int(ir[:-1]) for _, ir in irreps_out)
        target = tuple(nequip.even_irrep(l) for l in range(lmax_out + 1))
        ours = nequip.convolution_paths(tuple(irreps_in), config.lmax, target)
        stored = nequip.instruction_paths(tuple(irreps_in), config.lmax, target) if in_instruction_order else ours
        n_layers = len(config.radial_mlp) + 1
        radial = {
            f"layer_{i}": sd.take(f"{p}convolution.weight_nn.layer{i}.weight").astype(np.float32)
            for i in range(n_layers)
        }
        last = radial[f"layer_{n_layers - 1}"]
        widths = [irreps_in[path.ir_in] for path in stored]
        if last.shape[1] != sum(widths):
            raise ConversionError(f"{p}convolution.weight_nn.layer{n_layers - 1}: {last.shape[1]} outputs, {sum(widths)} expected")
        starts = dict(zip(stored, np.cumsum([0] + widths[:-1])))
        radial[f"layer_{n_layers - 1}"] = np.concatenate(
            [_coupling_sign(sd, f"{p}convolution", path) * last[:, starts[path] : starts[path] + irreps_in[path.ir_in]]
             for path in ours],
            axis=1,
        )
        mid = [(irreps_in[path.ir_in], path.ir_out) for path in ours]
        params[f"interactions_{t}"] = {
            "self_connection": linear_blocks(
                sd.take(f"{p}self_connection_intro.linear.weight"), config.node_irreps[t], gate, f"{p}self_connection_intro"
            ),
            "linear_1": linear_blocks(
                sd.take(f"{p}self_interaction_1.linear.weight"), config.node_irreps[t], config.node_irreps[t], f"{p}self_interaction_1"
            ),
            "radial_mlp": radial,
            "linear_2": linear_blocks(sd.take(f"{p}self_interaction_2.linear.weight"), mid, gate, f"{p}self_interaction_2"),
        }
    last_irreps = config.node_irreps[-1]
    params["readouts_0"] = {
        "linear_1": linear_blocks(
            sd.take("reduce_input_to_hidden.linear.weight"), last_irreps, [(config.readout_hidden, "0e")], "reduce_input_to_hidden"
        ),
        "linear_2": linear_blocks(
            sd.take("reduce_hidden_to_energy.linear.weight"), [(config.readout_hidden, "0e")], [(1, "0e")], "reduce_hidden_to_energy"
        ),
    }
    sd.check_all_used()
    return {"params": params, "constants": {}}


def convert_checkpoint(path: str | Path) -> tuple[SevenNetConfig, dict[str, Any]]:
    """SevenNet ``.pth`` → (config, variables as numpy arrays)."""
    checkpoint = read_checkpoint(path)
    config = config_from_checkpoint(checkpoint)
    return config, variables_from_checkpoint(checkpoint, config)


def convert_file(path: str | Path, output: str | Path) -> SevenNetConfig:
    """Convert a SevenNet checkpoint file and write the model directory ``output``."""
    config, variables = convert_checkpoint(path)
    save_model(output, config, variables)
    return config


def convert_pretrained(name: str, output: str | Path) -> SevenNetConfig:
    """Convert a pretrained SevenNet shipped in the installed sevenn package (e.g. ``"sevennet-0"``)."""
    return convert_file(pretrained_checkpoint(name), output)
