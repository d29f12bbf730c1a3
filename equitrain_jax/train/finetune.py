"""The fine-tuning job: converted model + labelled structures → fine-tuned model directory.

Composed of the pieces beside it: settings validated when built (`equitrain_jax.train.config`),
the output-directory rule and the files written (`equitrain_jax.train.outputs`), strategies by
name (`equitrain_jax.train.strategies`), the run's fingerprint (`equitrain_jax.train.fingerprint`)
and the epoch loop (`equitrain_jax.train.loop.fit`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import ase
import jax
import numpy as np
from tqdm import tqdm

from equitrain_jax.models.io import ModelBundle, load_model
from equitrain_jax.potential import DTYPES, resolve_head
from equitrain_jax.train.checkpoint import read_checkpoint_record
from equitrain_jax.train.config import FinetuneConfig, LossConfig, TrainConfig, check_replay
from equitrain_jax.train.data import LabelKeys, labelled_batches, sharded_batches
from equitrain_jax.train.e0s import refit_e0s
from equitrain_jax.train.fingerprint import as_json, model_digest, resume_changes, run_fingerprint, structures_digest
from equitrain_jax.train.loop import FitResult, data_mesh, fit
from equitrain_jax.train.outputs import (
    CHECKPOINTS,
    check_run_directory,
    clear_run_outputs,
    write_results,
    write_run_record,
)
from equitrain_jax.train.strategies import REGISTRY, StrategyInputs, build_strategy, with_new_head

__all__ = ["FinetuneConfig", "finetune", "split_train_valid", "with_new_head"]


def split_train_valid(
    structures: Sequence[ase.Atoms], valid_fraction: float, seed: int
) -> tuple[list[ase.Atoms], list[ase.Atoms]]:
    """Random split; at least one structure on each side."""
    if len(structures) < 2:
        raise ValueError(f"need at least 2 structures to split off a validation set, got {len(structures)}")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
    order = np.random.default_rng(seed).permutation(len(structures))
    n_valid = min(max(1, round(valid_fraction * len(structures))), len(structures) - 1)
    return [structures[i] for i in order[n_valid:]], [structures[i] for i in order[:n_valid]]


def _in_dtype(variables: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a), variables
    )


def finetune_fingerprint(bundle: ModelBundle, config: FinetuneConfig, train: Sequence[ase.Atoms],
                         valid: Sequence[ase.Atoms], replay: Sequence[ase.Atoms], keys: LabelKeys) -> dict:
    """What defines a fine-tuning run besides its optimiser and loss settings: content hashes of
    the base model and of each set of structures with their labels, the label keys and the job's
    settings (see `equitrain_jax.train.fingerprint`)."""
    label_keys = tuple(keys)
    return {
        "base_model": model_digest(bundle.config, bundle.variables),
        "train_data": structures_digest(train, label_keys),
        "valid_data": structures_digest(valid, label_keys),
        "replay_data": structures_digest(replay, label_keys),
        "keys": keys._asdict(),
        "finetune": dataclasses.asdict(config),
    }


def prepared_model(
    bundle: ModelBundle, config: FinetuneConfig, train: Sequence[ase.Atoms], keys: LabelKeys
) -> tuple[ModelBundle, int, Optional[int]]:
    """The model to train, the index of the head ``train`` trains, and that of the head the replay
    structures train (None without replay): the chosen head, or for strategy ``multihead`` a new
    one (see `with_new_head`); E0s refitted to ``train`` if ``config.e0s`` says so."""
    head_index, replay_head = resolve_head(bundle.config.heads, config.head), None
    if REGISTRY[config.strategy].adds_head:
        bundle = with_new_head(bundle, config.new_head, head_index)
        replay_head, head_index = head_index, len(bundle.config.heads) - 1
    if config.e0s == "refit":
        bundle = refit_e0s(bundle, train, keys, head_index)
    return bundle, head_index, replay_head


def padded_batches(structures: list, heads: Any, model_config: Any, config: FinetuneConfig, keys: LabelKeys,
                   mesh: Optional[jax.sharding.Mesh]) -> list:
    """Labelled batches of ``config.batch_size`` structures in the training dtype, stacked over the
    mesh's devices if there is a mesh."""
    dtype = DTYPES[config.dtype]
    if mesh is None:
        return labelled_batches(structures, model_config.r_max, model_config.atomic_numbers, config.batch_size, keys,
                                heads, dtype)
    return sharded_batches(structures, model_config.r_max, model_config.atomic_numbers, config.batch_size,
                           config.n_devices, keys, heads, dtype)


def finetune(
    model_dir: str | Path | ModelBundle,
    train: Sequence[ase.Atoms],
    valid: Sequence[ase.Atoms],
    output: str | Path,
    config: Optional[FinetuneConfig] = None,
    *,
    train_config: TrainConfig = TrainConfig(),
    loss_config: LossConfig = LossConfig(),
    keys: LabelKeys = LabelKeys(),
    replay: Sequence[ase.Atoms] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **settings: Any,
) -> FitResult:
    """Fine-tune the model in ``model_dir`` on ``train``, validate on ``valid``, write ``output``
    (see `equitrain_jax.train.outputs` for its files).

    ``config``: the strategy and the job's settings, or give them as keywords (``strategy``,
    ``rank``, … : the fields of `FinetuneConfig`).  ``replay``: structures that keep training
    the pretrained head (strategy ``multihead`` only).  ``output`` must be new or empty, unless
    ``resume`` (continue from ``output/checkpoints/last``: the checkpoint must belong to this
    very run, see `equitrain_jax.train.fingerprint`) or ``overwrite`` (replace the run there).

    Raises:
        ValueError: a bad setting or bad data (missing or NaN labels, unknown elements, empty
            sets), or a checkpoint of another run, before anything is compiled or written.
        FileExistsError: ``output`` holds something and neither ``resume`` nor ``overwrite``.
        FileNotFoundError: ``resume`` without a checkpoint.
    """
    if config is None:
        config = FinetuneConfig(**settings)
    elif settings:
        raise TypeError(f"give the settings in config or as keywords, not both: {sorted(settings)}")
    check_replay(config.strategy, len(replay))
    if not train or not valid:
        raise ValueError(f"need training and validation structures, got {len(train)} and {len(valid)}")
    output = check_run_directory(output, resume, overwrite)

    bundle = model_dir if isinstance(model_dir, ModelBundle) else load_model(model_dir)
    fingerprint = finetune_fingerprint(bundle, config, train, valid, replay, keys)
    if resume:  # refuse a checkpoint of another run before any work (fit checks again when it loads it)
        where = output / CHECKPOINTS / "last"
        record = read_checkpoint_record(where)
        resume_changes(record["metadata"].get("fingerprint"), run_fingerprint(train_config, loss_config, fingerprint),
                       record["epoch"], str(where))

    bundle, head_index, replay_head = prepared_model(bundle, config, train, keys)
    model_config, dtype = bundle.config, DTYPES[config.dtype]
    mesh = data_mesh(config.n_devices) if config.n_devices > 1 else None
    train_batches = padded_batches(list(train) + list(replay), [head_index] * len(train) + [replay_head] * len(replay),
                                   model_config, config, keys, mesh)
    valid_batches = padded_batches(list(valid), head_index, model_config, config, keys, mesh)

    variables = _in_dtype(bundle.variables, dtype)
    example = train_batches[0] if mesh is None else jax.tree_util.tree_map(lambda x: x[0], train_batches[0])
    strategy = build_strategy(
        StrategyInputs(variables, model_config, example, jax.random.PRNGKey(train_config.seed), dtype), config
    )
    module = ModelBundle(model_config, variables).module(dtype)

    if overwrite:
        clear_run_outputs(output)
    output.mkdir(parents=True, exist_ok=True)
    record = {
        "base_model": str(model_dir) if not isinstance(model_dir, ModelBundle) else "(in memory)",
        **dataclasses.asdict(config), "heads": list(model_config.heads), "trained_head": model_config.heads[head_index],
        "n_train": len(train), "n_valid": len(valid), "n_replay": len(replay),
        "keys": keys._asdict(), "loss": dataclasses.asdict(loss_config), "train": dataclasses.asdict(train_config),
        "data_sha256": {name: fingerprint[f"{name}_data"] for name in ("train", "valid", "replay")},
        "base_model_sha256": fingerprint["base_model"],
    }
    if not resume:
        write_run_record(output, as_json({**record, "resumes": []}))

    bar = tqdm(total=train_config.epochs * len(train_batches), desc=f"fine-tuning ({config.strategy})", unit="step",
               disable=not progress)

    def on_step(step: int, _metrics: dict) -> None:
        bar.update(step - bar.n)

    def log(entry: dict) -> None:
        bar.set_postfix_str(
            f"epoch {entry['epoch']} loss {entry['train_loss']:.4g} | "
            f"valid: F {entry['forces_mae_mev_per_a']:.1f} meV/Å, "
            f"E {entry['energy_mae_mev_per_atom']:.1f} meV/atom"
        )

    try:
        result = fit(module, strategy, train_batches, valid_batches, train_config, loss_config,
                     checkpoint_dir=output / CHECKPOINTS, resume=resume, mesh=mesh, log=log, on_step=on_step,
                     fingerprint=fingerprint)
    finally:
        bar.close()
    if resume:  # the settings it ran with now, and each resume with what it changed
        write_run_record(output, as_json({**record, "resumes": list(result.resumes)}))
    merged = strategy.merge(jax.device_get(result.trainable), strategy.frozen)
    write_results(output, model_config, merged, result.trainable, result.history)
    return result
