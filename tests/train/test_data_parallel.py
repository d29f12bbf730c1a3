"""Data-parallel training: batches sharded over two (host-platform) devices give the loss
trajectory and weights of ordinary one-device training on the same batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from common import ALLOY_ELEMENTS as ELEMENTS, alloy_bundle, emt_cells
    from equitrain_jax.adapters import lora_finetune
    from equitrain_jax.train import TrainConfig, data_mesh, fit, labelled_batches, sharded_batches

    assert len(jax.devices()) == 2, jax.devices()
    bundle = alloy_bundle(seed=1)
    cutoff, config = bundle.config.r_max, TrainConfig(epochs=3, learning_rate=5e-3, ema_decay=0.9, seed=2)
    train, valid = emt_cells(8, seed=30), emt_cells(4, seed=31)
    model = bundle.module(np.float64)

    def run(train_batches, valid_batches, mesh):
        strategy = lora_finetune(bundle.variables, rank=2, key=jax.random.PRNGKey(0))
        result = fit(model, strategy, train_batches, valid_batches, config, mesh=mesh)
        flat = [np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(jax.device_get(result.last))]
        return {"history": result.history, "weights": np.concatenate(flat).tolist()}

    sharded = sharded_batches(train, cutoff, ELEMENTS, 4, 2), sharded_batches(valid, cutoff, ELEMENTS, 4, 2)
    placed = jax.device_put(sharded[0][0], jax.sharding.NamedSharding(data_mesh(2), jax.sharding.PartitionSpec("data")))
    shards = {s.device.id: s.data.shape for s in placed.nodes["positions"].addressable_shards}
    out = {
        "two_devices": run(*sharded, data_mesh(2)),
        "one_device": run(labelled_batches(train, cutoff, ELEMENTS, 4), labelled_batches(valid, cutoff, ELEMENTS, 4), None),
        "shard_shapes": {str(k): list(v) for k, v in shards.items()},
    }
    json.dump(out, sys.stdout)
    """
)


def test_two_devices_match_one(tmp_path):
    pytest.importorskip("mace")
    tests = Path(__file__).parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["shard_shapes"]) == 2  # each device holds one shard of the stacked batch
    assert all(shape[0] == 1 for shape in out["shard_shapes"].values())
    two, one = out["two_devices"], out["one_device"]
    assert len(two["history"]) == len(one["history"]) == 4
    for a, b in zip(two["history"], one["history"]):
        for key in ("train_loss", "valid_loss", "forces_mae_mev_per_a", "energy_mae_mev_per_atom"):
            if key in b:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-9, err_msg=key)
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-7, atol=1e-10)
