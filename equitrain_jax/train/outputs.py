"""What a fine-tuning run writes into its output directory, and the rule that protects what is
already there.

``OUTDIR/``:

- ``model/``: the merged weights of the best validation epoch (EMA if enabled); loads like any
  converted model (``equitrain_jax.Calculator(model="OUTDIR/model")``);
- ``adapters.npz``: the trained tree alone (LoRA factors, deltas or weights, by dotted path);
  LoRA's element-dependent factors hold the elements of ``run.json``'s ``trained_elements`` only,
  in the order of the model's ``atomic_numbers``;
- ``checkpoints/{best,last}/``: the trained tree and optimiser state (not the frozen base) with
  the run's fingerprint, to resume an interrupted run (see `equitrain_jax.train.checkpoint`);
- ``history.json`` / ``history.csv``: per-epoch training loss, learning rate and validation
  metrics (energy MAE/RMSE meV/atom, force MAE/RMSE meV/Å, stress MAE/RMSE meV/Å³, stress MAE GPa);
- ``run.json``: the base model, content hashes of the data, the elements trained on
  (``trained_elements``, atomic numbers), every setting, and each resume with the settings it
  changed.

A directory that holds anything is never written into unless the run is resumed (``resume``) or
replaced (``overwrite``: only the files above are removed, nothing else).  The checks import
neither JAX nor NumPy, so the command line runs them before any work.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

MODEL, ADAPTERS, CHECKPOINTS, RUN = "model", "adapters.npz", "checkpoints", "run.json"
HISTORY_JSON, HISTORY_CSV = "history.json", "history.csv"
OUTPUTS = (MODEL, ADAPTERS, CHECKPOINTS, HISTORY_JSON, HISTORY_CSV, RUN)


def check_writable(path: str | Path, what: str = "output") -> Path:
    """``path`` can be created or written: no file where a directory is needed on the way, and
    write permission in the deepest existing directory.  Raises `NotADirectoryError` or
    `PermissionError` naming the place."""
    path = Path(path)
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if ancestor != path.absolute() and not ancestor.is_dir():
        raise NotADirectoryError(f"{what} {path}: {ancestor} is a file, not a directory")
    place = ancestor if ancestor.is_dir() else ancestor.parent
    if not os.access(place, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: no permission to write in {place}")
    return path


def check_output_directory(path: str | Path, replace_flag: str, overwrite: bool = False,
                           what: str = "output directory") -> Path:
    """``path`` is a directory to create, or an empty one, or with ``overwrite`` any directory;
    else a `FileExistsError` naming what is there and ``replace_flag`` (how to write anyway)."""
    path = check_writable(path, what)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{what} {path} is a file")
    if path.is_dir() and not overwrite:
        contents = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        if contents:
            shown = ", ".join(contents[:6]) + (f" and {len(contents) - 6} more" if len(contents) > 6 else "")
            raise FileExistsError(f"{what} {path} is not empty ({shown}); nothing was overwritten: "
                                  f"choose another one or {replace_flag}")
    return path


def check_output_file(path: str | Path, replace_flag: str, overwrite: bool = False, what: str = "output file") -> Path:
    """``path`` is a file to create, or with ``overwrite`` to replace; an existing file is
    otherwise refused (`FileExistsError` naming ``replace_flag``), a directory always."""
    path = check_writable(path, what)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {path} exists; nothing was overwritten: choose another name or {replace_flag}")
    return path


def check_run_directory(output: str | Path, resume: bool, overwrite: bool,
                        flags: tuple[str, str] = ("resume=True", "overwrite=True"),
                        base_model: str | Path | None = None,
                        names: tuple[str, str] = ("model_dir", "output")) -> Path:
    """The rule for a fine-tuning output directory: empty or new; with ``resume`` one that holds
    a checkpoint to continue; with ``overwrite`` anything (its run outputs are replaced); never
    one whose run outputs (`OUTPUTS`) hold ``base_model``, the model directory the run starts
    from, which the run would replace.  ``flags`` and ``names``: how the caller spells resume and
    overwrite, and the base model and the output, for the messages."""
    output = Path(output)
    resume_flag, overwrite_flag = flags
    if base_model is not None:
        model = Path(base_model).resolve()
        for name in OUTPUTS:
            written = (output / name).resolve()
            if model == written or written in model.parents:
                raise ValueError(f"{names[0]} {base_model} is {name} of {names[1]} {output}, which this run replaces; "
                                 "fine-tune a copy of it, or write to another directory")
    if resume and overwrite:
        raise ValueError(f"{resume_flag} continues the run in {output} and {overwrite_flag} replaces it: give one")
    if resume:
        if not (output / CHECKPOINTS / "last" / "state.json").is_file():
            raise FileNotFoundError(
                f"nothing to resume in {output}: no {CHECKPOINTS}/last/state.json (the run never reached "
                f"its first checkpoint, or this is not a fine-tuning output); start it with {overwrite_flag}"
            )
        return check_writable(output, "output directory")
    return check_output_directory(output, f"pass {resume_flag} to continue the run there or {overwrite_flag} to "
                                          "replace it", overwrite)


def checkpoint_progress(output: str | Path) -> dict | None:
    """The counters of ``output``'s last checkpoint (``epoch``, ``position``, ``step``, …), or None."""
    try:
        return json.loads((Path(output) / CHECKPOINTS / "last" / "state.json").read_text())
    except (OSError, ValueError):
        return None


def clear_run_outputs(output: Path) -> None:
    """Remove what a previous run wrote into ``output`` (`OUTPUTS`), and nothing else."""
    for name in OUTPUTS:
        target = output / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def read_run_record(output: Path) -> dict:
    path = output / RUN
    return json.loads(path.read_text()) if path.is_file() else {}


def write_run_record(output: Path, record: dict) -> Path:
    """``run.json``, replaced atomically."""
    path = output / RUN
    staging = path.with_name(RUN + ".saving")
    staging.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staging, path)
    return path


def write_results(output: Path, model_config: Any, merged: Any, trainable: Any, history: Sequence[dict]) -> None:
    """``model/`` (``merged``: the model's variables), ``adapters.npz`` (``trainable``), and the
    history as ``history.json`` and ``history.csv``."""
    import jax  # here, so that the checks above load no JAX
    import numpy as np

    from equitrain_jax.adapters.paths import dotted_path
    from equitrain_jax.models.io import save_model

    save_model(output / MODEL, model_config, jax.tree_util.tree_map(np.asarray, merged))
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(trainable))[0]
    np.savez(output / ADAPTERS, **{dotted_path(path): np.asarray(leaf) for path, leaf in flat})
    (output / HISTORY_JSON).write_text(json.dumps(list(history), indent=2) + "\n")
    with open(output / HISTORY_CSV, "w", newline="") as f:
        fields = list(dict.fromkeys(k for entry in history for k in entry))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
