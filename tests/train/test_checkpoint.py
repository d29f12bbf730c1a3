"""Checkpoints survive an interruption at any moment of a save, and the output-directory rule.

The save is interrupted in turn before each of its file-system operations (renames, removals;
the operations orbax makes in this thread included), as a kill at that moment would: afterwards
the checkpoint must still load, as the previous state or the new one, and the next save must
clear what the interrupted one left behind.  Deleting the old checkpoint before renaming the new
one into place fails this test.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import threading

import numpy as np
import pytest

from equitrain_jax.train.checkpoint import TrainState, load_checkpoint, read_checkpoint_record, save_checkpoint
from equitrain_jax.train.outputs import check_run_directory, clear_run_outputs

OPERATIONS = [(os, "replace"), (os, "rename"), (os, "remove"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree"),
              (shutil, "move"), (pathlib.Path, "rename"), (pathlib.Path, "replace"), (pathlib.Path, "unlink"),
              (pathlib.Path, "rmdir")]


class Killed(BaseException):
    """The process died here."""


def state(value: float, step: int) -> TrainState:
    return TrainState({"w": np.full(3, value), "b": np.asarray(value)}, {"mu": np.full(3, 2 * value)}, None,
                      step=step, epoch=step, history=({"epoch": step, "valid_loss": value},))


def template() -> TrainState:
    return state(0.0, 0)


def interrupted_save(monkeypatch, directory, new: TrainState, at: int) -> int:
    """Save ``new``, killed before the ``at``-th file operation of this thread; returns how many
    operations ran (all of them if the save finished)."""
    calls = [0]

    def killing(original):
        def operation(*args, **kwargs):
            if threading.current_thread() is threading.main_thread():
                calls[0] += 1
                if calls[0] == at:
                    raise Killed
            return original(*args, **kwargs)
        return operation

    with monkeypatch.context() as patch:
        for owner, name in OPERATIONS:
            patch.setattr(owner, name, killing(getattr(owner, name)))
        try:
            save_checkpoint(directory, new)
        except Killed:
            pass
    return calls[0]


def test_a_kill_at_any_moment_of_a_save_leaves_a_checkpoint(monkeypatch, tmp_path):
    save_checkpoint(tmp_path / "count", state(1.0, 1))
    total = interrupted_save(monkeypatch, tmp_path / "count", state(2.0, 2), at=0)
    assert total >= 2  # at least the commit and the removal of the old arrays
    for at in range(1, total + 1):
        directory = tmp_path / f"kill_{at}" / "last"
        save_checkpoint(directory, state(1.0, 1))
        interrupted_save(monkeypatch, directory, state(2.0, 2), at)
        loaded, _ = load_checkpoint(directory, template())
        value = float(loaded.trainable["b"])
        assert value in (1.0, 2.0), at
        assert loaded.step == value and np.all(loaded.opt_state["mu"] == 2 * value) and loaded.history[0]["epoch"] == value
        save_checkpoint(directory, state(3.0, 3))  # the next save clears the leftovers
        assert float(load_checkpoint(directory, template())[0].trainable["b"]) == 3.0
        assert sorted(p.name.split("-")[0] for p in directory.iterdir()) == ["arrays", "state.json"], at


def test_leftovers_of_a_killed_save_do_not_disturb_loading(tmp_path):
    directory = tmp_path / "last"
    save_checkpoint(directory, state(1.0, 1))
    (directory / "arrays-00000002-deadbeef").mkdir()  # a half-written new checkpoint
    (directory / "arrays-00000002-deadbeef" / "junk").write_bytes(b"\x00" * 10)
    (directory / "state.json.saving").write_text('{"step": 2, "trun')
    assert float(load_checkpoint(directory, template())[0].trainable["b"]) == 1.0
    assert read_checkpoint_record(directory)["step"] == 1


def test_run_directory_rule(tmp_path):
    """New or empty: accepted; holding anything: refused unless resume (with a checkpoint) or
    overwrite, which removes the run's own files and nothing else."""
    assert check_run_directory(tmp_path / "new", resume=False, overwrite=False) == tmp_path / "new"
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    for name in ("run.json", "history.json", "history.csv", "adapters.npz", "notes.txt"):
        (run / name).write_text("x")
    with pytest.raises(FileExistsError, match="not empty .*resume=True.*overwrite=True"):
        check_run_directory(run, resume=False, overwrite=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        check_run_directory(run, resume=True, overwrite=False)
    with pytest.raises(ValueError, match="give one"):
        check_run_directory(run, resume=True, overwrite=True)
    (run / "checkpoints" / "last" / "state.json").write_text("{}")
    assert check_run_directory(run, resume=True, overwrite=False) == run
    assert check_run_directory(run, resume=False, overwrite=True) == run
    clear_run_outputs(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        check_run_directory(tmp_path / "file" / "run", resume=False, overwrite=False)
