"""mace-torch models with the architectures of the MACE foundation families and random weights.

The pretrained weights are downloaded at run time by mace-torch, which offline machines cannot do;
these constructors build the same architectures on the spot so that conversion, parity tests and
benchmarks exercise every mapping.  Each `Architecture` records the hyper-parameters of one family
as read from its training script, mace-torch's own source or the model's publication; where a
value could not be read from a primary source, ``provenance`` says how it was inferred
(docs/mace-families.md has the table with sources).

A model is built at the family's real width by default; ``channels=`` gives a narrower copy with
the same options for fast tests (the edge irreps shrink in proportion).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import numpy as np

from equitrain_jax.convert.mace_torch import import_torch

# The 89 elements of the MACE-MP / OMAT / MATPES / MH training sets (H–Pu without Po–Ac) and the
# 10 of SPICE used by MACE-OFF.
MATERIALS_ELEMENTS = tuple(range(1, 84)) + (89, 90, 91, 92, 93, 94)
ORGANIC_ELEMENTS = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)

RESIDUAL = "RealAgnosticResidualInteractionBlock"
PLAIN = "RealAgnosticInteractionBlock"
DENSITY = "RealAgnosticDensityInteractionBlock"
DENSITY_RESIDUAL = "RealAgnosticDensityResidualInteractionBlock"
NONLINEAR = "RealAgnosticResidualNonLinearInteractionBlock"

MH_HEADS = ("matpes_r2scan", "mp_pbe_refit_add", "spice_wB97M", "oc20_usemppbe", "omol", "omat_pbe")
OMOL_EMBEDDING_SPECS = {
    "total_spin": dict(type="categorical", per="graph", in_dim=1, emb_dim=1024, num_classes=101, offset=0),
    "total_charge": dict(type="categorical", per="graph", in_dim=1, emb_dim=1024, num_classes=201, offset=100),
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Hyper-parameters of one mace-torch foundation family (lengths in Å).

    ``hidden_l`` is the highest l of the hidden irreps ``channels x (0e + 1o + …)``; ``odd_scalars``
    adds ``channels x 0o`` (no foundation family does; kept to build such models for tests).
    ``edge_channels`` sets ``edge_irreps`` to ``edge_channels x (0e + 1o + …)`` up to ``hidden_l``
    (None: mace-torch's default, the node irreps) in layers 2, 3, …; ``use_edge_irreps_first`` also
    narrows layer 1's to ``edge_channels x 0e``.  ``zero_shift``: trained as ``--model=MACE``,
    which builds a ScaleShiftMACE with shift 0.  ``use_reduced_cg``: the symmetric-contraction basis
    (mace-torch's constructor defaults to the reduced one, its training script ``run_train`` to the
    full one, which released files therefore carry: other U matrices and weight shapes, the same
    functions).  The six MACE-MP names older than this table keep the reduced basis the test fixtures were made with.
    """

    first: str
    other: str
    hidden_l: int
    r_max: float
    num_bessel: int
    channels: int = 128
    zbl: bool = False
    transform: str = "None"
    num_interactions: int = 2
    correlation: int = 3
    max_ell: int = 3
    radial_type: str = "bessel"
    apply_cutoff: bool = True
    edge_channels: Optional[int] = None
    use_edge_irreps_first: bool = False
    use_agnostic_product: bool = False
    odd_scalars: bool = False
    embedding_specs: Optional[dict[str, Any]] = None
    heads: Optional[tuple[str, ...]] = None
    zero_shift: bool = False
    use_reduced_cg: bool = False
    elements: tuple[int, ...] = MATERIALS_ELEMENTS
    provenance: str = ""

    def hidden_irreps(self, channels: int) -> str:
        irreps = [f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(self.hidden_l + 1)]
        if self.odd_scalars:
            irreps.insert(1, f"{channels}x0o")
        return "+".join(irreps)

    def edge_irreps(self, channels: int) -> Optional[str]:
        """The edge irreps at width ``channels`` (scaled from the family's edge/node ratio)."""
        if self.edge_channels is None:
            return None
        width = max(1, round(self.edge_channels * channels / self.channels))
        return "+".join(f"{width}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(self.hidden_l + 1))


_MP = "mace-mp training script (github.com/ACEsuit/mace-mp)"
_OMAT = (
    "mace-foundations mace_omat/mace-omat-medium.sh (config-omat.yaml not public: num_bessel is "
    "mace-torch's default 8, r_max 6 from the script)"
)
_MH = (
    "arXiv:2510.25380 and a public MH-1 re-implementation (symmetrix): NonLinear blocks, agnostic "
    "product, hidden 512x0e+512x1o, max_ell 3, correlation 3, 2 layers, 6 heads; edge_irreps 128 "
    "channels in every layer (use_edge_irreps_first) inferred from the file size, apply_cutoff=False "
    "from the paper text; ZBL, Agnesi and 8 Bessel functions assumed from its OMAT pre-training"
)
_OFF = "mace-off training script (github.com/ACEsuit/mace-off) and arXiv:2312.15211"

# Options shared by families: the MP-0b/OMAT core repulsion, and the MACE-OFF element set.
_ZBL = dict(zbl=True, transform="Agnesi", zero_shift=True)
_ORGANIC = dict(zero_shift=True, elements=ORGANIC_ELEMENTS, provenance=_OFF)
_MH_CORE = dict(
    channels=512, apply_cutoff=False, edge_channels=128, use_edge_irreps_first=True, use_agnostic_product=True,
    heads=MH_HEADS, **_ZBL,
)

ARCHITECTURES: dict[str, Architecture] = {
    "mp0a-small": Architecture(RESIDUAL, RESIDUAL, 0, 6.0, 10, use_reduced_cg=True, provenance=_MP),
    "mp0a-medium": Architecture(RESIDUAL, RESIDUAL, 1, 6.0, 10, use_reduced_cg=True, provenance=_MP),
    "mp0a-large": Architecture(RESIDUAL, RESIDUAL, 2, 6.0, 10, use_reduced_cg=True, provenance=_MP),
    "mp0b-small": Architecture(PLAIN, RESIDUAL, 0, 6.0, 8, provenance=_MP, **_ZBL),
    "mp0b": Architecture(PLAIN, RESIDUAL, 1, 6.0, 8, use_reduced_cg=True, provenance=_MP, **_ZBL),
    "mp0b2-small": Architecture(DENSITY, DENSITY_RESIDUAL, 0, 5.0, 8, provenance=_MP, **_ZBL),
    "mp0b2": Architecture(DENSITY, DENSITY_RESIDUAL, 1, 5.0, 8, use_reduced_cg=True, provenance=_MP, **_ZBL),
    "mp0b2-large": Architecture(DENSITY, DENSITY_RESIDUAL, 2, 5.0, 8, provenance=_MP, **_ZBL),
    "mp0b3": Architecture(DENSITY, DENSITY_RESIDUAL, 1, 6.0, 10, use_reduced_cg=True, provenance=_MP, **_ZBL),
    "mpa0-medium": Architecture(
        DENSITY, DENSITY_RESIDUAL, 1, 6.0, 10,
        provenance="no public training script; assumed to be the MP-0b3 architecture (unverified)",
        **_ZBL,
    ),
    "omat0-small": Architecture(DENSITY, DENSITY_RESIDUAL, 0, 6.0, 8, provenance=_OMAT, **_ZBL),
    "omat0-medium": Architecture(DENSITY, DENSITY_RESIDUAL, 1, 6.0, 8, provenance=_OMAT, **_ZBL),
    "matpes-pbe": Architecture(
        DENSITY, DENSITY_RESIDUAL, 1, 6.0, 8,
        provenance="fine-tuned from OMAT-0 medium (file MACE-matpes-pbe-omat-ft.model): its architecture",
        **_ZBL,
    ),
    "matpes-r2scan": Architecture(
        DENSITY, DENSITY_RESIDUAL, 1, 6.0, 8,
        provenance="fine-tuned from OMAT-0 medium (file MACE-matpes-r2scan-omat-ft.model): its architecture",
        **_ZBL,
    ),
    "mh0": Architecture(
        NONLINEAR, NONLINEAR, 1, 6.0, 8,
        provenance=(
            "assumed to share MH-1's architecture (same release, same heads); unverified, and its "
            "file (40 MB against MH-1's 59 MB) says it differs"
        ),
        **_MH_CORE,
    ),
    "mh1": Architecture(NONLINEAR, NONLINEAR, 1, 6.0, 8, provenance=_MH, **_MH_CORE),
    "omol0": Architecture(
        NONLINEAR, NONLINEAR, 2, 6.0, 8, channels=1024, num_interactions=3, correlation=2, apply_cutoff=False,
        edge_channels=128, embedding_specs=OMOL_EMBEDDING_SPECS, heads=("omol",),
        provenance="mace-foundations mace_omol/mace-omol.sh",
    ),
    "off23-small": Architecture(PLAIN, RESIDUAL, 0, 5.0, 8, channels=96, **_ORGANIC),
    "off23-medium": Architecture(PLAIN, RESIDUAL, 1, 5.0, 8, **_ORGANIC),
    "off23-large": Architecture(PLAIN, RESIDUAL, 2, 5.0, 8, channels=192, **_ORGANIC),
    "off24-medium": Architecture(PLAIN, RESIDUAL, 1, 5.0, 8, **{
        **_ORGANIC, "provenance": "no public training script; assumed to be OFF23 medium's architecture (unverified)",
    }),
}


def build_mace_torch(
    architecture: Union[str, Architecture] = "mp0a-medium",
    atomic_numbers: Optional[Sequence[int]] = (1, 6, 8, 14),
    channels: Optional[int] = None,
    heads: Optional[Sequence[str]] = None,
    model_class: str = "ScaleShiftMACE",
    distance_transform: Optional[str] = None,
    dtype: str = "float64",
    seed: int = 0,
    avg_num_neighbors: float = 12.0,
):
    """A randomly initialised mace-torch model of a foundation family (a name of `ARCHITECTURES`,
    or an `Architecture`).

    ``channels`` (default: the family's real width) and ``atomic_numbers`` (None: the family's
    elements) shrink it for tests; ``heads`` overrides the family's heads.  E0s, scale and shift are
    random too (one per head; shift 0 for families trained with it fixed), so every constant of
    the model is tested.  ``distance_transform`` overrides the family's (``"Soft"``, ``"Agnesi"``,
    ``"None"``).
    """
    if isinstance(architecture, str):
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
        architecture = ARCHITECTURES[architecture]
    arch = architecture
    if model_class not in ("ScaleShiftMACE", "MACE"):
        raise ValueError(f"model_class {model_class!r} is not MACE or ScaleShiftMACE")
    torch = import_torch()
    from e3nn import o3
    from mace.modules import blocks, models

    channels = channels or arch.channels
    atomic_numbers = list(atomic_numbers or arch.elements)
    heads = list(heads or arch.heads or []) or None
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        n_heads = len(heads) if heads else 1
        atomic_energies = -rng.uniform(1.0, 5.0, size=(n_heads, len(atomic_numbers)))
        edge_irreps = arch.edge_irreps(channels)
        kwargs = dict(
            r_max=arch.r_max,
            num_bessel=arch.num_bessel,
            num_polynomial_cutoff=5,
            max_ell=arch.max_ell,
            interaction_cls=getattr(blocks, arch.other),
            interaction_cls_first=getattr(blocks, arch.first),
            num_interactions=arch.num_interactions,
            num_elements=len(atomic_numbers),
            hidden_irreps=o3.Irreps(arch.hidden_irreps(channels)),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=atomic_energies if heads else atomic_energies[0],
            avg_num_neighbors=avg_num_neighbors,
            atomic_numbers=atomic_numbers,
            correlation=arch.correlation,
            gate=torch.nn.functional.silu,
            pair_repulsion=arch.zbl,
            distance_transform=distance_transform or arch.transform,
            radial_MLP=[64, 64, 64],
            radial_type=arch.radial_type,
            apply_cutoff=arch.apply_cutoff,
            edge_irreps=o3.Irreps(edge_irreps) if edge_irreps else None,
            use_edge_irreps_first=arch.use_edge_irreps_first,
            use_agnostic_product=arch.use_agnostic_product,
            use_reduced_cg=arch.use_reduced_cg,
            embedding_specs=arch.embedding_specs,
            heads=heads,
        )
        if model_class == "ScaleShiftMACE":
            scale = rng.uniform(0.5, 1.5, size=n_heads)
            shift = np.zeros(n_heads) if arch.zero_shift else rng.uniform(-0.2, 0.2, size=n_heads)
            model = models.ScaleShiftMACE(
                atomic_inter_scale=scale if heads else float(scale[0]),
                atomic_inter_shift=shift if heads else float(shift[0]),
                **kwargs,
            )
        else:
            model = models.MACE(**kwargs)
        _randomise_constant_initialisations(model, torch.Generator().manual_seed(seed))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _randomise_constant_initialisations(model, generator) -> None:
    """Random values for the parameters mace-torch starts at constants: in the non-linear
    interaction block α = 20, β = 0, LayerNorm scale 1 and bias 0, element embeddings within
    ±1e-3.  At those values the density normalisation, the LayerNorm affine maps and the
    embeddings barely act, so a conversion error in them would go unseen."""
    torch = import_torch()

    def uniform(tensor, low, high):
        tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype))

    with torch.no_grad():
        for block in model.interactions:
            if type(block).__name__ != NONLINEAR:
                continue
            uniform(block.alpha, 0.5, 1.5)
            uniform(block.beta, 0.5, 1.5)
            for embedding in (block.source_embedding, block.target_embedding):
                uniform(embedding.weight, -1.0, 1.0)
            for mlp in (block.conv_tp_weights, block.density_fn):
                for layer in mlp.net:
                    if isinstance(layer, torch.nn.LayerNorm):
                        uniform(layer.weight, 0.7, 1.3)
                        uniform(layer.bias, -0.3, 0.3)
