"""Real signals to a running ``equitrain-jax finetune``: Ctrl-C (SIGINT) in the middle of an
epoch prints one line with the checkpoint and the exact command that resumes the run; SIGKILL
gives no warning at all.  Resuming after both must give the history and the weights of a run
that was never interrupted, bit for bit (the same seed and programs: training is deterministic).

The processes share a compilation cache, so only the first compiles.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from equitrain_jax.models.io import load_model

from .conftest import command, command_env, equitrain_jax

pytestmark = pytest.mark.slow  # five processes: 100 s here (2 shared cores, load 10), 45 s of CPU time

EPOCHS = 8
ARGS = ("finetune", "--model", "base", "--train", "long_train.xyz", "--valid", "valid.xyz", "--epochs", str(EPOCHS),
        "--batch-size", "1", "--lr", "0.01", "--ema", "0.9", "--schedule", "plateau", "--plateau-patience", "1",
        "--dtype", "float64", "--seed", "3")
STEPS_PER_EPOCH = 24  # long_train.xyz holds 24 structures


def progress(output: Path) -> dict | None:
    try:
        return json.loads((output / "checkpoints" / "last" / "state.json").read_text())
    except (OSError, ValueError):
        return None


def signal_mid_epoch(argv: list[str], cwd: Path, env: dict, signum: int) -> subprocess.CompletedProcess:
    """Start ``argv`` and, once its progress bar (on stderr) shows it a full epoch in and in the
    middle of an epoch, send ``signum``."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: list[bytes] = []

    def read() -> None:
        while chunk := os.read(process.stderr.fileno(), 4096):
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    first = None
    while process.poll() is None:
        steps = [int(n) for n in re.findall(rb"(\d+)/\d+ \[", b"".join(chunks)) if int(n)]  # not the bar's "0/N"
        if steps:
            first = steps[0] if first is None else first
            if steps[-1] >= first + STEPS_PER_EPOCH and 6 <= steps[-1] % STEPS_PER_EPOCH <= 16:
                process.send_signal(signum)
                break
        time.sleep(0.002)
    out = process.stdout.read()
    process.wait(timeout=300)
    reader.join()
    assert process.returncode != 0, "the run ended before the signal"
    return subprocess.CompletedProcess(argv, process.returncode, out.decode(), b"".join(chunks).decode())


def outputs(output: Path) -> tuple:
    history = json.loads((output / "history.json").read_text())
    adapters = dict(np.load(output / "adapters.npz"))
    model = load_model(output / "model").variables
    return history, adapters, model


def test_sigint_and_sigkill_mid_epoch_then_resume_give_the_uninterrupted_run(workspace, tmp_path):
    for name in ("base", "long_train.xyz", "valid.xyz"):
        (tmp_path / name).symlink_to(workspace / name)
    env = command_env(EQUITRAIN_JAX_CACHE_DIR=str(tmp_path / "xla"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      TQDM_MININTERVAL="0", TQDM_MINITERS="1")  # the progress bar shows every step
    straight = equitrain_jax(*ARGS, "-o", "straight", cwd=tmp_path, EQUITRAIN_JAX_CACHE_DIR=str(tmp_path / "xla"),
                             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    assert straight.returncode == 0, straight.stderr[-3000:]

    tuned = tmp_path / "tuned"
    resume = ["equitrain-jax", *ARGS, "-o", "tuned", "--resume"]
    argv = command(*ARGS, "-o", "tuned")
    for _ in range(3):  # until a Ctrl-C lands inside an epoch rather than between two
        interrupted = signal_mid_epoch(argv, tmp_path, env, signal.SIGINT)
        assert interrupted.returncode == 130, interrupted.stderr[-3000:]
        assert "Traceback" not in interrupted.stderr, interrupted.stderr[-3000:]
        line = interrupted.stderr.strip().splitlines()[-1].split("\r")[-1]
        state = progress(tuned)
        assert line.startswith("equitrain-jax finetune: interrupted; the run is saved in tuned/checkpoints/last "
                               f"({state['epoch']} of {EPOCHS} epochs done"), line
        assert shlex.split(line.split("; resume it with: ")[1]) == resume, line
        argv = command(*resume[1:])
        if state["position"] > 0:
            assert f"and {state['position']} steps of the next" in line
            break
    assert 0 < state["position"] < STEPS_PER_EPOCH, state  # saved in the middle of an epoch

    killed = signal_mid_epoch(argv, tmp_path, env, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    finished = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]

    (history, adapters, model), (reference, reference_adapters, reference_model) = outputs(tuned), outputs(tmp_path / "straight")
    assert history == reference and len(history) == EPOCHS + 1
    assert adapters.keys() == reference_adapters.keys()
    assert all(adapters[k].tobytes() == reference_adapters[k].tobytes() for k in adapters)
    leaves = [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(model)]
    assert leaves == [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(reference_model)]
    resumes = json.loads((tuned / "run.json").read_text())["resumes"]
    assert len(resumes) >= 2 and all(r["changed"] == {} for r in resumes)
