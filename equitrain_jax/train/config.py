"""Settings of a fine-tuning run, each validated when it is built: the optimiser (`TrainConfig`),
the loss (`LossConfig`), the Hessian term of phonon data (`HessianLossConfig`) and the job
(`FinetuneConfig`: strategy, batches, dtype, E0s, devices), and the one vocabulary of names and
defaults that the library and the command line share.

This module imports neither JAX nor NumPy: the command line reads its choices and defaults here
and rejects a bad option before anything heavy is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Optional

SCHEDULES = ("constant", "cosine", "plateau")
"""Learning-rate schedules (see `TrainConfig`)."""

LOSS_KINDS = ("huber", "mse", "mae")
"""Pointwise losses of a residual (see `equitrain_jax.train.loss.pointwise`)."""

STRATEGIES = {
    "lora": "LoRA factors on the pretrained weights (rank, alpha, targets); the weights stay frozen",
    "delta": "L2-SP: trained residuals δ on the targets, penalised by l2sp_weight·Σδ²",
    "freeze": "only the targets trained (default: readouts and products), the rest frozen",
    "full": "every weight trained",
    "multihead": "a new head for the training set while replay structures keep training the pretrained "
                 "head; every weight trained",
    "scratch": "the same architecture with fresh random weights, every weight trained",
}
"""Fine-tuning strategies by name, with what each trains.  `equitrain_jax.train.strategies`
builds each; the command line offers exactly these."""

E0_CHOICES = ("foundation", "refit")
"""``foundation`` keeps the model's isolated-atom energies E0; ``refit`` fits them to the training
set first (least squares of the energy residual per element)."""

DTYPES = ("float32", "float64")

BACKENDS = ("e3nn", "cuequivariance")
"""Implementations of MACE's edge convolution and symmetric contraction (same parameters):
e3nn-style JAX, or cuequivariance-jax (the optional extra ``cueq``; CUDA kernels on a GPU)."""

MONITORS = {
    "valid_loss": "the validation loss (structures, and the Hessian term of --valid-phonons references)",
    "phonon_mae": "the phonon-frequency MAE (THz) on the validation phonon references",
    "forces_mae": "the force MAE (meV/Å) on the validation structures",
    "energy_mae": "the energy MAE (meV/atom) on the validation structures",
}
"""Validation metrics that can choose the best epoch and drive early stopping and reduce-on-plateau
(`TrainConfig.monitor`), with what each is."""

MONITORED_KEYS = {"valid_loss": "valid_loss", "phonon_mae": "phonon_mae_thz", "forces_mae": "forces_mae_mev_per_a",
                  "energy_mae": "energy_mae_mev_per_atom"}
"""The history entry each of `MONITORS` reads."""

DIRECTION_MODES = {
    "random": "uniform random directions over the supercell; targets Φ·v",
    "phonopy": "phonopy's displacement directions; targets Φ·v",
    "raw": "the displaced supercells' û; targets −F_DFT(u)/|u|, unsymmetrised (biased by O(|u|) anharmonicity)",
}
"""How the directions v of the Hessian term are chosen (see `equitrain_jax.train.phonon_data`)."""

DEFAULT_DIRECTION_MODE = "random"
"""Random directions by default: their mean squared residual is an unbiased (Hutchinson) estimate
of ‖H − Φ‖²_F / 3N for every reference, whatever its symmetry, and by the Hoffman–Wielandt
inequality that bounds the squared eigenvalue (ω²) errors of the supercell's modes.  Phonopy's
directions determine the whole H only when the reference is exactly symmetric and the model
exactly equivariant, and they weight symmetry orbits by their representatives, not by their
size; for crystals with one or two displacements (cubic ones) they are noise-free with K = D."""

DEFAULT_DIRECTIONS = 4
"""K, directions per phonon item and step.  Cost (benchmarks/hessian_step.py, a 64-atom phonon item
next to 64 atoms of structures, LoRA, CPU): 2.8–4.1× the step without the Hessian term at K = 1
(MACE-MP-0 small, SevenNet-0), and for MACE 4.9× and 11.9× at K = 4 in two runs on a loaded
machine; XLA's temporaries grow by about 0.55 GB (MACE-MP-0 small) and 1.6 GB (SevenNet-0) per
direction (docs/phonon-finetuning.md)."""

FINETUNE_DTYPE = "float32"
"""Arithmetic of fine-tuning.  float32, because training on tens to thousands of structures is
limited by label noise and optimisation, not by rounding; float32 evaluates MACE 1.8x faster than
float64 on CPU (README inference table: 137 vs 245 ms at 64 atoms, 1.07 vs 1.96 s at 512) and
needs half the memory (4096 atoms fit in float32 only), and GPUs are faster still.  The dtype
only sets the arithmetic of training: the saved model is evaluated at any dtype, and
``evaluate`` and ``phonons`` default to float64, which exact forces and Hessians need."""

DEFAULT_FREEZE_TRAINABLE = ("readouts.*", "products.*")
"""What strategy ``freeze`` trains when no targets are given."""

PRETRAINED_HEAD = "pt_head"
"""Strategy ``multihead`` renames the pretrained head ``Default`` to this, as mace-torch does."""


class SettingError(ValueError):
    """Invalid settings; ``problems`` maps each offending field to what is wrong with it."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"{field} {text}" for field, text in self.problems.items()))


def _validated(problems: dict[str, Optional[str]]) -> None:
    found = {field: text for field, text in problems.items() if text is not None}
    if found:
        raise SettingError(found)


def _positive(value: Any) -> Optional[str]:
    if isinstance(value, numbers.Real) and value > 0 and math.isfinite(value):
        return None
    return f"must be a positive number, got {value!r}"


def _at_least(value: Any, low: int) -> Optional[str]:
    if isinstance(value, numbers.Integral) and value >= low:
        return None
    return f"must be an integer >= {low}, got {value!r}"


def _non_negative(value: Any) -> Optional[str]:
    if isinstance(value, numbers.Real) and value >= 0 and math.isfinite(value):
        return None
    return f"must be >= 0, got {value!r}"


def _one_of(value: Any, choices) -> Optional[str]:
    return None if value in choices else f"must be one of {tuple(choices)}, got {value!r}"


def _open_unit(value: Any) -> Optional[str]:
    return None if isinstance(value, numbers.Real) and 0 < value < 1 else f"must lie in (0, 1), got {value!r}"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (AdamW), checked when built.

    ``learning_rate`` and ``min_learning_rate`` per optimiser step; ``weight_decay``: AdamW's
    decoupled decay; ``clip_norm``: the gradient's global norm is clipped to it first (None: no
    clipping).  ``schedule``: ``constant``, ``cosine`` (decay to ``min_learning_rate`` over the
    run) or ``plateau`` (multiply the rate by ``plateau_factor`` after ``plateau_patience`` epochs
    without a better validation loss, down to ``min_learning_rate``); all after ``warmup_epochs``
    of linear warm-up.  ``ema_decay``: keep an exponential moving average of the weights
    (validation, checkpoints and the final model use it), with the usual warm-up
    ``min(decay, (1+n)/(10+n))``.  ``early_stopping_patience``: stop after this many epochs
    without a better validation loss.  ``monitor``: the validation metric (one of `MONITORS`)
    that "better" means, for the best epoch, early stopping and the plateau schedule.  ``seed``:
    batch order, Hessian directions (and LoRA / scratch initialisation).
    """

    epochs: int = 50
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    clip_norm: Optional[float] = 10.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    min_learning_rate: float = 1e-6
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    ema_decay: Optional[float] = None
    early_stopping_patience: Optional[int] = None
    monitor: str = "valid_loss"
    seed: int = 0

    def __post_init__(self) -> None:
        _validated({
            "epochs": _at_least(self.epochs, 1),
            "learning_rate": _positive(self.learning_rate),
            "weight_decay": _non_negative(self.weight_decay),
            "clip_norm": None if self.clip_norm is None else _positive(self.clip_norm),
            "schedule": _one_of(self.schedule, SCHEDULES),
            "warmup_epochs": _at_least(self.warmup_epochs, 0),
            "min_learning_rate": _non_negative(self.min_learning_rate),
            "plateau_factor": _open_unit(self.plateau_factor),
            "plateau_patience": _at_least(self.plateau_patience, 1),
            "ema_decay": None if self.ema_decay is None else _open_unit(self.ema_decay),
            "early_stopping_patience": None if self.early_stopping_patience is None
            else _at_least(self.early_stopping_patience, 1),
            "monitor": _one_of(self.monitor, MONITORS),
            "seed": _at_least(self.seed, 0),
        })


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of each loss term (energy per atom: eV/atom; forces eV/Å; stress eV/Å³), the
    pointwise loss ``kind`` and the Huber δ, checked when built.  Defaults (10, 100, 1000, Huber
    δ = 0.01) follow the MACE-MP fine-tuning recipe."""

    energy_weight: float = 10.0
    forces_weight: float = 100.0
    stress_weight: float = 1000.0
    kind: str = "huber"
    huber_delta: float = 0.01

    def __post_init__(self) -> None:
        weights = (self.energy_weight, self.forces_weight, self.stress_weight)
        problems = {f"{term}_weight": _non_negative(w) for term, w in zip(("energy", "forces", "stress"), weights)}
        if not any(problems.values()) and not any(weights):
            problems["weights"] = "are all 0 (energy, forces and stress): nothing to train on"
        _validated({**problems, "kind": _one_of(self.kind, LOSS_KINDS), "huber_delta": _positive(self.huber_delta)})


@dataclasses.dataclass(frozen=True)
class HessianLossConfig:
    """The Hessian term of phonon data, checked when built: ``weight`` (per eV²/Å⁴ of the mean
    pointwise loss of the H·v − Φ·v components), the pointwise loss ``kind`` (one of `LOSS_KINDS`)
    with its Huber ``huber_delta`` (eV/Å²), ``directions`` K per phonon item and step, and how they
    are chosen (``mode``, one of `DIRECTION_MODES`).  ``sequential``: compute the K products one
    after another, each rematerialised in the reverse pass, instead of all at once (vmapped): the
    same loss and gradient, XLA temporaries of about one direction instead of K, at the price of
    recomputing each product (see `equitrain_jax.train.hessian_loss.model_hvp`).  On by default: on
    one CPU core, at K = 4 on a 64-atom supercell, the sequential step took 6.0 s where the vmapped
    one took 13.3 s, with 950 MB of XLA temporaries against 2808 MB (MACE-MP-0 small,
    benchmarks/hessian_step.py, 2026-11-30); ``False`` vmaps the K products.  With K = 1 the two
    are one program (a single product is not rematerialised).

    Huber with δ = 0.1 eV/Å² (a few per cent of typical force constants, 1–10 eV/Å²) by default:
    in the EMT-aluminium prototype (docs/phonon-finetuning.md) it cut the frequency error 144× in
    40 steps where MSE cut it 21×.
    """

    weight: float = 1.0
    kind: str = "huber"
    huber_delta: float = 0.1
    directions: int = DEFAULT_DIRECTIONS
    mode: str = DEFAULT_DIRECTION_MODE
    sequential: bool = True

    def __post_init__(self) -> None:
        _validated({
            "weight": _non_negative(self.weight),
            "kind": _one_of(self.kind, LOSS_KINDS),
            "huber_delta": _positive(self.huber_delta),
            "directions": _at_least(self.directions, 1),
            "mode": _one_of(self.mode, DIRECTION_MODES),
            "sequential": None if isinstance(self.sequential, bool)
            else f"must be True or False, got {self.sequential!r}",
        })


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """What a fine-tuning job does besides optimising (`TrainConfig`) a loss (`LossConfig`),
    checked when built.

    ``strategy``: one of `STRATEGIES`.  ``rank``, ``alpha`` (default: rank): LoRA.
    ``targets``: parameter path patterns (LoRA, delta: the adapted weights; freeze: the trained
    ones).  ``l2sp_weight``: delta's penalty (eV-scale loss units per Σδ²).  ``new_head``:
    multihead's new head, trained on the training set.  ``head``: the head to fine-tune (default:
    the only or the ``Default`` one).  ``batch_size``: structures per optimiser step;
    ``phonon_batch_size``: phonon references per optimiser step (every step holds a batch of each
    kind of data there is; the shorter list is cycled within the epoch).  ``dtype``:
    see `FINETUNE_DTYPE`.  ``e0s``: one of `E0_CHOICES`.  ``n_devices``: shard every batch over
    this many devices.
    """

    strategy: str = "lora"
    rank: int = 4
    alpha: Optional[float] = None
    targets: Optional[tuple[str, ...]] = None
    l2sp_weight: float = 1e-3
    new_head: str = "Default"
    head: Optional[str] = None
    batch_size: int = 4
    phonon_batch_size: int = 4
    dtype: str = FINETUNE_DTYPE
    e0s: str = "foundation"
    n_devices: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))
        elif self.targets is not None and not isinstance(self.targets, tuple):
            object.__setattr__(self, "targets", tuple(self.targets))
        targets_ok = self.targets is None or (self.targets and all(isinstance(t, str) and t for t in self.targets))
        _validated({
            "strategy": _one_of(self.strategy, STRATEGIES),
            "rank": _at_least(self.rank, 1),
            "alpha": None if self.alpha is None else _positive(self.alpha),
            "targets": None if targets_ok else f"must be non-empty path patterns, got {self.targets!r}",
            "l2sp_weight": _non_negative(self.l2sp_weight),
            "new_head": None if isinstance(self.new_head, str) and self.new_head
            else f"must be a name, got {self.new_head!r}",
            "batch_size": _at_least(self.batch_size, 1),
            "phonon_batch_size": _at_least(self.phonon_batch_size, 1),
            "dtype": _one_of(self.dtype, DTYPES),
            "e0s": _one_of(self.e0s, E0_CHOICES),
            "n_devices": _at_least(self.n_devices, 1),
        })


def check_replay(strategy: str, n_replay: int) -> None:
    """Replay structures go with strategy ``multihead``, which needs them, and with no other."""
    if strategy == "multihead" and not n_replay:
        raise ValueError("strategy 'multihead' needs replay structures (e.g. a subset of the pretraining data)")
    if n_replay and strategy != "multihead":
        raise ValueError(f"replay structures are used by strategy 'multihead' only, not {strategy!r}")


# ---------------------------------------------------------------------------- third-order data

FORCES_ONLY = "forces_only"
"""``atoms.info`` flag of a training structure labelled with forces only (phono3py's displaced
supercells): its energy term is masked (`equitrain_jax.train.data`)."""

THIRD_ORDER_MODES = {
    "random": "independent uniform random direction pairs (u, v) over the supercell; targets Φ3[u, v]",
    "phono3py": "phono3py's displacement pairs (first and second displaced atom's directions); targets Φ3[u, v]",
}
"""How the direction pairs of the third-order term are chosen (see `equitrain_jax.train.third_order`)."""

DEFAULT_THIRD_ORDER_MODE = "random"
"""Random pairs by default: with independent u, v and E[u uᵀ] = E[v vᵀ] = I, the mean squared
residual per component is an unbiased estimate of ‖Φ3_model − Φ3_DFT‖²_F / 3N over every triplet of
the supercell, whatever its symmetry.  phono3py's pairs are the symmetry-reduced representatives
within its pair cutoff: they weight each orbit by one member, miss the triplets that symmetry
generates, and in cubic crystals share one first atom (Si: 110 pairs, one first displacement)."""

DEFAULT_THIRD_ORDER_DIRECTIONS = 2
"""K, direction pairs per phono3py reference and step: each pair is one jvp of a Hessian-vector
product (forward over forward over reverse); the step's cost with the term is not yet benchmarked."""


@dataclasses.dataclass(frozen=True)
class ThirdOrderLossConfig:
    """The third-order term of phono3py data, checked when built: ``weight`` (per eV²/Å⁶ of the mean
    pointwise loss of the Φ3_model[u, v] − Φ3_DFT[u, v] components), the pointwise loss ``kind``
    (one of `LOSS_KINDS`) with its Huber ``huber_delta`` (eV/Å³), ``directions`` K pairs per
    reference and step, and how they are chosen (``mode``, one of `THIRD_ORDER_MODES`).

    Directions have length √(3N) like the Hessian term's, so a component's RMS is ‖Φ3‖_F/√(3N):
    78 eV/Å³ for phono3py's Si-PBE example (64 atoms).  Huber δ = 1 eV/Å³ (about 1 % of that, as
    the Hessian term's δ is of force constants) and weight 0.01 put a 25 % error of Si's Φ3 (a
    linear-regime loss of about 0.2) on the scale of the Hessian term at a 25 % error (about 0.4);
    a scaling choice, not a tuned value.

    ``sequential``, as `HessianLossConfig`'s: the K pairs' products one after another, each
    rematerialised in the reverse pass (the default), or all at once (vmapped); the same loss and
    gradient (see `equitrain_jax.train.third_order.model_third_order`).
    """

    weight: float = 0.01
    kind: str = "huber"
    huber_delta: float = 1.0
    directions: int = DEFAULT_THIRD_ORDER_DIRECTIONS
    mode: str = DEFAULT_THIRD_ORDER_MODE
    sequential: bool = True

    def __post_init__(self) -> None:
        _validated({
            "weight": _non_negative(self.weight),
            "kind": _one_of(self.kind, LOSS_KINDS),
            "huber_delta": _positive(self.huber_delta),
            "directions": _at_least(self.directions, 1),
            "mode": _one_of(self.mode, THIRD_ORDER_MODES),
            "sequential": None if isinstance(self.sequential, bool)
            else f"must be True or False, got {self.sequential!r}",
        })
