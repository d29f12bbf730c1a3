"""The fine-tuning job: converted model + labelled structures → fine-tuned model directory.

Writes ``OUTDIR/model`` (merged weights; loads like any converted model), ``OUTDIR/trainable.npz``
(the trained tree: LoRA factors, deltas or weights, by dotted path) and ``OUTDIR/history.json`` /
``history.csv`` (per-epoch loss and validation MAEs).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional, Sequence

import ase
import jax
import numpy as np
from tqdm import tqdm

from equitrain_jax.adapters import (
    from_scratch,
    full_finetune,
    l2sp_finetune,
    l2sp_penalty,
    lora_finetune,
    partial_finetune,
)
from equitrain_jax.adapters.paths import dotted_path
from equitrain_jax.models.io import load_model, save_model
from equitrain_jax.potential import DTYPES, resolve_head
from equitrain_jax.train.data import LabelKeys, labelled_batches
from equitrain_jax.train.loop import FitResult, adamw, fit

STRATEGIES = ("lora", "delta", "freeze", "full", "scratch")
DEFAULT_FREEZE_TRAINABLE = ("readouts.*", "products.*")


def split_train_valid(
    structures: Sequence[ase.Atoms], valid_fraction: float, seed: int
) -> tuple[list[ase.Atoms], list[ase.Atoms]]:
    """Random split; at least one structure on each side."""
    if len(structures) < 2:
        raise ValueError(f"need at least 2 structures to split off a validation set, got {len(structures)}")
    order = np.random.default_rng(seed).permutation(len(structures))
    n_valid = min(max(1, round(valid_fraction * len(structures))), len(structures) - 1)
    return [structures[i] for i in order[n_valid:]], [structures[i] for i in order[:n_valid]]


def finetune(
    model_dir: str | Path,
    train: Sequence[ase.Atoms],
    valid: Sequence[ase.Atoms],
    output: str | Path,
    strategy: str = "lora",
    epochs: int = 50,
    learning_rate: float = 1e-3,
    batch_size: int = 4,
    rank: int = 4,
    alpha: Optional[float] = None,
    targets: Optional[Sequence[str]] = None,
    l2sp_weight: float = 1e-3,
    keys: LabelKeys = LabelKeys(),
    head: Optional[str] = None,
    dtype: str = "float64",
    seed: int = 0,
) -> FitResult:
    """Fine-tune the model in ``model_dir`` on ``train``, validate on ``valid``, write ``output``.

    ``strategy``: ``lora`` (rank, alpha, targets), ``delta`` (L2-SP residuals on targets, penalty
    ``l2sp_weight``), ``freeze`` (only ``targets`` trained; default readouts and products),
    ``full``, or ``scratch`` (same architecture, fresh weights).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    bundle = load_model(model_dir)
    config = bundle.config
    head_index = resolve_head(config.heads, head)
    np_dtype = DTYPES[dtype]
    batches = {
        name: labelled_batches(structures, config.r_max, config.atomic_numbers, batch_size, keys, head_index, np_dtype)
        for name, structures in (("train", train), ("validation", valid))
    }
    variables = jax.tree_util.tree_map(
        lambda a: np.asarray(a, np_dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a),
        bundle.variables,
    )
    penalty = None
    if strategy == "lora":
        chosen = lora_finetune(variables, rank, alpha, **({"targets": tuple(targets)} if targets else {}),
                               key=jax.random.PRNGKey(seed))
    elif strategy == "delta":
        chosen = l2sp_finetune(variables, **({"targets": tuple(targets)} if targets else {}))
        penalty = lambda deltas: l2sp_penalty(deltas, l2sp_weight)  # noqa: E731
    elif strategy == "freeze":
        chosen = partial_finetune(variables, tuple(targets) if targets else DEFAULT_FREEZE_TRAINABLE)
    elif strategy == "full":
        chosen = full_finetune(variables)
    else:
        chosen = from_scratch(config, batches["train"][0], jax.random.PRNGKey(seed), np_dtype)
    module = bundle.module(np_dtype)

    progress = tqdm(total=epochs, desc=f"fine-tuning ({strategy})", unit="epoch")

    def log(entry):
        progress.update(1)
        progress.set_postfix(
            loss=f"{entry['train_loss']:.4g}",
            force_mae=f"{entry['forces_mae_mev_per_a']:.1f} meV/Å",
            energy_mae=f"{entry['energy_mae_mev_per_atom']:.1f} meV/atom",
        )

    result = fit(module, chosen, batches["train"], batches["validation"], epochs,
                 adamw(learning_rate), penalty=penalty, seed=seed, log=log)
    progress.close()

    output = Path(output)
    merged = jax.tree_util.tree_map(np.asarray, chosen.merge(result.trainable, chosen.frozen))
    save_model(output / "model", config, merged)
    flat = jax.tree_util.tree_flatten_with_path(result.trainable)[0]
    np.savez(output / "trainable.npz", **{dotted_path(path): np.asarray(leaf) for path, leaf in flat})
    (output / "history.json").write_text(json.dumps(result.history, indent=2) + "\n")
    with open(output / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for entry in result.history for k in entry}))
        writer.writeheader()
        writer.writerows(result.history)
    return result
