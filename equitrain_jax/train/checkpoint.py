"""Training checkpoints with orbax: the trained tree, optimiser state and EMA, plus the loop's
counters, so a run resumes exactly where it stopped.

Only what training changes is stored (LoRA factors, deltas or weights, and their optimiser
state); the frozen base model is not copied, so a checkpoint of a LoRA run is small.  Trees are
stored as numbered leaves and rebuilt on the structure of freshly initialised ones, which keeps
optax's state types (and `optax.MaskedNode` for frozen leaves) intact.

Layout: ``DIR/{last,best}/arrays`` (orbax) and ``DIR/{last,best}/state.json``.  A checkpoint is
written beside its target and renamed into place, so an interruption while saving leaves the
previous one intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

ARRAYS, STATE = "arrays", "state.json"


class TrainState(NamedTuple):
    """Everything a training run needs to continue bit for bit.

    ``epoch``: epochs completed; ``position``: steps done within the running epoch;
    ``epoch_losses``: training losses of its steps so far; ``lr_scale``: the reduce-on-plateau factor; ``best_loss``/``bad_epochs``: validation loss
    bookkeeping; ``history``: per-epoch metrics so far.
    """

    trainable: Any
    opt_state: Any
    ema: Any
    step: int = 0
    epoch: int = 0
    position: int = 0
    lr_scale: float = 1.0
    best_loss: float = float("inf")
    bad_epochs: int = 0
    plateau_epochs: int = 0
    epoch_losses: tuple = ()
    history: tuple = ()


def _numbered(tree: Any) -> dict[str, np.ndarray]:
    return {f"{i:05d}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _rebuild(template: Any, numbered: dict[str, np.ndarray], what: str, directory: Path) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = [numbered[key] for key in sorted(numbered)]
    if len(stored) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(stored, leaves)):
        raise ValueError(
            f"checkpoint {directory}: its {what} ({len(stored)} arrays) does not fit this run's "
            f"({len(leaves)} arrays); it was written for another model, strategy or optimiser"
        )
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(s, np.asarray(t).dtype) for s, t in zip(stored, leaves)])


def save_checkpoint(directory: str | Path, state: TrainState, metadata: Optional[dict] = None) -> Path:
    """Write ``state`` to ``directory`` (replaced atomically); ``metadata``: JSON-able run facts."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    staging = directory.with_name(directory.name + ".saving")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    arrays = {"trainable": _numbered(state.trainable), "opt_state": _numbered(state.opt_state)}
    if state.ema is not None:
        arrays["ema"] = _numbered(state.ema)
    ocp.PyTreeCheckpointer().save(staging / ARRAYS, jax.device_get(arrays))
    counters = {name: getattr(state, name) for name in TrainState._fields if name not in ("trainable", "opt_state", "ema")}
    counters = {k: list(v) if isinstance(v, tuple) else v for k, v in counters.items()}
    (staging / STATE).write_text(json.dumps({**counters, "metadata": metadata or {}}, indent=1) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    staging.rename(directory)
    return directory


def load_checkpoint(directory: str | Path, template: TrainState) -> tuple[TrainState, dict]:
    """Read a checkpoint onto the tree structures of ``template`` (a freshly initialised state of
    the same run); returns the state and the stored metadata."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not (directory / STATE).is_file():
        raise FileNotFoundError(f"no training checkpoint in {directory} (expected {STATE} and {ARRAYS}/)")
    checkpointer = ocp.PyTreeCheckpointer()
    structure = checkpointer.metadata(directory / ARRAYS).item_metadata.tree
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(structure))
    arrays = checkpointer.restore(directory / ARRAYS, restore_args=restore_args)
    saved = json.loads((directory / STATE).read_text())
    metadata = saved.pop("metadata")
    if (template.ema is None) != ("ema" not in arrays):
        raise ValueError(f"checkpoint {directory}: EMA {'absent' if template.ema is not None else 'present'}, "
                         "but this run's ema_decay says otherwise")
    state = TrainState(
        trainable=_rebuild(template.trainable, arrays["trainable"], "trained tree", directory),
        opt_state=_rebuild(template.opt_state, arrays["opt_state"], "optimiser state", directory),
        ema=None if template.ema is None else _rebuild(template.ema, arrays["ema"], "EMA tree", directory),
        **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()},
    )
    return state, metadata
