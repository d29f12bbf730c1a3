"""The fine-tuning job: converted model + labelled structures → fine-tuned model directory.

Writes into ``OUTDIR``:

- ``model/``: the merged weights of the best validation epoch (EMA if enabled); loads like any
  converted model (``equitrain_jax.Calculator(model="OUTDIR/model")``);
- ``adapters.npz``: the trained tree alone (LoRA factors, deltas or weights, by dotted path);
- ``checkpoints/{best,last}/``: orbax checkpoints of the trained tree and optimiser state (not the
  frozen base), to resume an interrupted run;
- ``history.json`` / ``history.csv``: per-epoch training loss, learning rate and validation
  metrics (energy MAE/RMSE meV/atom, force MAE/RMSE meV/Å, stress MAE meV/Å³ and GPa);
- ``run.json``: the base model, strategy and every setting.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Sequence

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
from equitrain_jax.adapters.heads import add_head, rename_head
from equitrain_jax.adapters.paths import dotted_path
from equitrain_jax.models.io import ModelBundle, load_model, save_model
from equitrain_jax.potential import DTYPES, resolve_head
from equitrain_jax.train.data import LabelKeys, labelled_batches, sharded_batches
from equitrain_jax.train.e0s import refit_e0s
from equitrain_jax.train.loop import FitResult, TrainConfig, data_mesh, fit
from equitrain_jax.train.loss import LossConfig

STRATEGIES = ("lora", "delta", "freeze", "full", "multihead", "scratch")
E0_CHOICES = ("foundation", "refit")
DEFAULT_FREEZE_TRAINABLE = ("readouts.*", "products.*")
PRETRAINED_HEAD = "pt_head"


def split_train_valid(
    structures: Sequence[ase.Atoms], valid_fraction: float, seed: int
) -> tuple[list[ase.Atoms], list[ase.Atoms]]:
    """Random split; at least one structure on each side."""
    if len(structures) < 2:
        raise ValueError(f"need at least 2 structures to split off a validation set, got {len(structures)}")
    order = np.random.default_rng(seed).permutation(len(structures))
    n_valid = min(max(1, round(valid_fraction * len(structures))), len(structures) - 1)
    return [structures[i] for i in order[n_valid:]], [structures[i] for i in order[:n_valid]]


def _in_dtype(variables: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a), variables
    )


def with_new_head(bundle: ModelBundle, name: str, copy_from: int) -> ModelBundle:
    """``bundle`` with a head ``name`` copied from head ``copy_from``; an existing head of that name
    (the pretrained ``Default``) is renamed ``pt_head``, so the new head is the default one."""
    config = bundle.config
    if name in config.heads:
        config = rename_head(config, name, PRETRAINED_HEAD)
    return ModelBundle(*add_head(config, bundle.variables, name, copy_from))


def finetune(
    model_dir: str | Path | ModelBundle,
    train: Sequence[ase.Atoms],
    valid: Sequence[ase.Atoms],
    output: str | Path,
    strategy: str = "lora",
    train_config: TrainConfig = TrainConfig(),
    loss_config: LossConfig = LossConfig(),
    batch_size: int = 4,
    rank: int = 4,
    alpha: Optional[float] = None,
    targets: Optional[Sequence[str]] = None,
    l2sp_weight: float = 1e-3,
    keys: LabelKeys = LabelKeys(),
    head: Optional[str] = None,
    dtype: str = "float64",
    e0s: str = "foundation",
    replay: Sequence[ase.Atoms] = (),
    new_head: str = "Default",
    n_devices: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Fine-tune the model in ``model_dir`` on ``train``, validate on ``valid``, write ``output``.

    ``strategy``: ``lora`` (rank, alpha, targets), ``delta`` (L2-SP residuals on targets, penalty
    ``l2sp_weight``), ``freeze`` (only ``targets`` trained; default readouts and products),
    ``full``, ``multihead`` (a new head ``new_head`` for ``train`` while the ``replay`` structures
    keep training the pretrained head; all weights trained), or ``scratch`` (same architecture,
    fresh weights).  ``e0s``: ``foundation`` keeps the model's E0s, ``refit`` fits them to ``train``
    first.  ``n_devices`` > 1 shards every batch over that many devices.  ``resume`` continues
    from ``output/checkpoints/last``.

    Raises:
        ValueError: for a bad setting or bad data (missing or NaN labels, unknown elements, empty
            sets), before anything is compiled.
    """
    train_config = train_config.check()
    loss_config = loss_config.check()
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if e0s not in E0_CHOICES:
        raise ValueError(f"e0s must be one of {E0_CHOICES}, got {e0s!r}")
    if strategy == "multihead" and not replay:
        raise ValueError("strategy 'multihead' needs replay structures (e.g. a subset of the pretraining data)")
    if replay and strategy != "multihead":
        raise ValueError(f"replay structures are used by strategy 'multihead' only, not {strategy!r}")
    if not train or not valid:
        raise ValueError(f"need training and validation structures, got {len(train)} and {len(valid)}")
    bundle = model_dir if isinstance(model_dir, ModelBundle) else load_model(model_dir)
    head_index = resolve_head(bundle.config.heads, head)
    if strategy == "multihead":
        bundle = with_new_head(bundle, new_head, head_index)
        replay_head, head_index = head_index, len(bundle.config.heads) - 1
    if e0s == "refit":
        bundle = refit_e0s(bundle, train, keys, head_index)
    config = bundle.config
    np_dtype = DTYPES[dtype]

    train_set = list(train) + list(replay)
    train_heads = [head_index] * len(train) + ([replay_head] * len(replay) if replay else [])
    if n_devices > 1:
        mesh = data_mesh(n_devices)
        make = lambda structures, heads: sharded_batches(  # noqa: E731
            structures, config.r_max, config.atomic_numbers, batch_size, n_devices, keys, heads, np_dtype)
    else:
        mesh = None
        make = lambda structures, heads: labelled_batches(  # noqa: E731
            structures, config.r_max, config.atomic_numbers, batch_size, keys, heads, np_dtype)
    train_batches = make(train_set, train_heads)
    valid_batches = make(list(valid), head_index)

    variables = _in_dtype(bundle.variables, np_dtype)
    penalty = None
    chosen_targets = {"targets": tuple(targets)} if targets else {}
    if strategy == "lora":
        chosen = lora_finetune(variables, rank, alpha, **chosen_targets, key=jax.random.PRNGKey(train_config.seed))
    elif strategy == "delta":
        chosen = l2sp_finetune(variables, **chosen_targets)
        penalty = lambda deltas: l2sp_penalty(deltas, l2sp_weight)  # noqa: E731
    elif strategy == "freeze":
        chosen = partial_finetune(variables, tuple(targets) if targets else DEFAULT_FREEZE_TRAINABLE)
    elif strategy in ("full", "multihead"):
        chosen = full_finetune(variables)
    else:
        first = jax.tree_util.tree_map(lambda x: x[0], train_batches[0]) if mesh is not None else train_batches[0]
        chosen = from_scratch(config, first, jax.random.PRNGKey(train_config.seed), np_dtype)
    module = ModelBundle(config, variables).module(np_dtype)

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "base_model": str(model_dir) if not isinstance(model_dir, ModelBundle) else "(in memory)",
        "strategy": strategy, "rank": rank, "alpha": alpha, "targets": list(targets or []),
        "l2sp_weight": l2sp_weight, "batch_size": batch_size, "dtype": dtype, "e0s": e0s,
        "heads": list(config.heads), "trained_head": config.heads[head_index], "n_devices": n_devices,
        "n_train": len(train), "n_valid": len(valid), "n_replay": len(replay),
        "keys": keys._asdict(), "loss": loss_config._asdict(), "train": dataclasses.asdict(train_config),
    }
    (output / "run.json").write_text(json.dumps(settings, indent=2) + "\n")

    bar = tqdm(total=train_config.epochs * len(train_batches), desc=f"fine-tuning ({strategy})", unit="step",
               disable=not progress)

    def on_step(step: int, _metrics: dict) -> None:
        bar.update(step - bar.n)

    def log(entry: dict) -> None:
        bar.set_postfix_str(
            f"epoch {entry['epoch']} loss {entry['train_loss']:.4g} | valid: F {entry['forces_mae_mev_per_a']:.1f} meV/Å, "
            f"E {entry['energy_mae_mev_per_atom']:.1f} meV/atom"
        )

    result = fit(module, chosen, train_batches, valid_batches, train_config, loss_config, penalty,
                 checkpoint_dir=output / "checkpoints", resume=resume, mesh=mesh, log=log, on_step=on_step,
                 metadata={"base_model": settings["base_model"], "strategy": strategy})
    bar.close()

    merged = jax.tree_util.tree_map(np.asarray, chosen.merge(jax.device_get(result.trainable), chosen.frozen))
    save_model(output / "model", config, merged)
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(result.trainable))[0]
    np.savez(output / "adapters.npz", **{dotted_path(path): np.asarray(leaf) for path, leaf in flat})
    (output / "history.json").write_text(json.dumps(result.history, indent=2) + "\n")
    with open(output / "history.csv", "w", newline="") as f:
        fields = list(dict.fromkeys(k for entry in result.history for k in entry))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result.history)
    return result
