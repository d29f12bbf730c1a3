"""Training checkpoints with orbax: the trained tree, optimiser state and EMA, plus the loop's
counters, so a run resumes exactly where it stopped.

Only what training changes is stored (LoRA factors, deltas or weights, and their optimiser
state); the frozen base model is not copied, so a checkpoint of a LoRA run is small.  Trees are
stored as numbered leaves and rebuilt on the structure of freshly initialised ones, which keeps
optax's state types (and `optax.MaskedNode` for frozen leaves) intact.

Layout: ``DIR/{last,best}/state.json`` (the loop's counters, the run's fingerprint, and the name
of the arrays directory) and ``DIR/{last,best}/arrays-<step>-<tag>/`` (orbax).  A save writes a
new arrays directory, then replaces ``state.json`` by an atomic rename, then removes the old
arrays: at every moment ``state.json`` names a complete checkpoint, so an interruption at any
point, even SIGKILL, leaves the previous checkpoint or the new one, and the next save clears
whatever an interrupted one left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

ARRAYS, STATE = "arrays", "state.json"  # arrays: the prefix of each arrays directory
ARRAY_FIELDS = ("trainable", "opt_state", "ema")  # the TrainState fields stored as arrays


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


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back while a checkpoint is written, and deliver them to
    their handlers once it is: orbax writes in threads that an interruption would leave failing
    noisily.  Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}  # None: not Python's
    for signum in previous:
        signal.signal(signum, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received[:1]:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def save_checkpoint(directory: str | Path, state: TrainState, metadata: Optional[dict] = None) -> Path:
    """Write ``state`` to ``directory``, replacing what is there atomically (see the module
    docstring); ``metadata``: JSON-able run facts stored beside the counters.  Ctrl-C waits
    until the checkpoint is written (see `signals_held`)."""
    with signals_held():
        return _save(Path(directory).absolute(), state, metadata)


def _save(directory: Path, state: TrainState, metadata: Optional[dict]) -> Path:
    import orbax.checkpoint as ocp

    directory.mkdir(parents=True, exist_ok=True)
    name = f"{ARRAYS}-{state.step:08d}-{uuid.uuid4().hex[:8]}"
    arrays = {"trainable": _numbered(state.trainable), "opt_state": _numbered(state.opt_state)}
    if state.ema is not None:
        arrays["ema"] = _numbered(state.ema)
    ocp.PyTreeCheckpointer().save(directory / name, jax.device_get(arrays))
    counters = {field: getattr(state, field) for field in TrainState._fields if field not in ARRAY_FIELDS}
    counters = {k: list(v) if isinstance(v, tuple) else v for k, v in counters.items()}
    staging = directory / f"{STATE}.saving"
    with open(staging, "w") as f:
        f.write(json.dumps({**counters, ARRAYS: name, "metadata": metadata or {}}, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, directory / STATE)  # the commit
    for leftover in directory.iterdir():  # older arrays and anything an interrupted save left
        if leftover.name != name and leftover.name.startswith((ARRAYS, f"{STATE}.")):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    return directory


def read_checkpoint_record(directory: str | Path) -> dict:
    """A checkpoint's ``state.json``: the loop's counters (``epoch``, ``step``, ``history``, …),
    the ``arrays`` directory and the run's ``metadata``; read without loading any array."""
    directory = Path(directory).absolute()
    if not (directory / STATE).is_file():
        raise FileNotFoundError(f"no training checkpoint in {directory} (expected {STATE})")
    try:
        return json.loads((directory / STATE).read_text())
    except ValueError as error:
        raise ValueError(f"checkpoint {directory / STATE} is not valid JSON: {error}") from error


def load_checkpoint(directory: str | Path, template: TrainState) -> tuple[TrainState, dict]:
    """Read a checkpoint onto the tree structures of ``template`` (a freshly initialised state of
    the same run); returns the state and the stored metadata."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    saved = read_checkpoint_record(directory)
    arrays_dir = directory / saved.pop(ARRAYS, ARRAYS)
    if not arrays_dir.is_dir():
        raise FileNotFoundError(f"checkpoint {directory}: {STATE} names {arrays_dir.name}/, which is missing")
    checkpointer = ocp.PyTreeCheckpointer()
    structure = checkpointer.metadata(arrays_dir).item_metadata.tree
    restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), dict(structure))
    arrays = checkpointer.restore(arrays_dir, restore_args=restore_args)
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
