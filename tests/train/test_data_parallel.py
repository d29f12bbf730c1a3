"""Data-parallel fine-tuning from the command line: ``finetune --devices 2`` on two host-platform
devices gives the history and weights of the same run on one device (summation order only), and
each device holds one shard of every stacked batch.  One fresh process (the device count is
fixed when JAX starts) runs both, on a tiny model."""

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
    from pathlib import Path
    import ase.io, jax
    from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells, tiny_mace
    from equitrain_jax import cli
    from equitrain_jax.models.io import save_model
    from equitrain_jax.train import data_mesh, sharded_batches

    assert len(jax.devices()) == 2, jax.devices()
    root = Path(sys.argv[1])
    bundle = tiny_mace(ELEMENTS, seed=1)
    save_model(root / "base", bundle.config, bundle.variables)
    train, valid = emt_cells(8, seed=30), emt_cells(4, seed=31)
    ase.io.write(root / "train.xyz", train)
    ase.io.write(root / "valid.xyz", valid)
    for n in (2, 1):
        cli.main(["finetune", "--model", str(root / "base"), "--train", str(root / "train.xyz"), "--valid",
                  str(root / "valid.xyz"), "--epochs", "3", "--lr", "5e-3", "--ema", "0.9", "--seed", "2", "--rank", "2",
                  "--batch-size", "4", "--dtype", "float64", "--devices", str(n), "-o", str(root / f"devices_{n}")])
    batch = sharded_batches(train, bundle.config.r_max, ELEMENTS, 4, 2)[0]
    placed = jax.device_put(batch, jax.sharding.NamedSharding(data_mesh(2), jax.sharding.PartitionSpec("data")))
    print(json.dumps({str(s.device.id): list(s.data.shape) for s in placed.nodes["positions"].addressable_shards}))
    """
)


def test_two_devices_match_one(tmp_path):
    pytest.importorskip("mace")
    tests, repo = Path(__file__).parents[1], Path(__file__).parents[2]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "EQUITRAIN_JAX_CACHE_DIR": "",
           "PYTHONPATH": os.pathsep.join([str(tests), str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(shards) == 2 and all(shape[0] == 1 for shape in shards.values())  # one shard of the stack each
    two, one = (json.loads((tmp_path / f"devices_{n}" / "history.json").read_text()) for n in (2, 1))
    assert len(two) == len(one) == 4
    for a, b in zip(two, one):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-9, err_msg=key)
    adapters = [dict(np.load(tmp_path / f"devices_{n}" / "adapters.npz")) for n in (2, 1)]
    assert adapters[0].keys() == adapters[1].keys()
    for key in adapters[1]:
        np.testing.assert_allclose(adapters[0][key], adapters[1][key], rtol=1e-7, atol=1e-10, err_msg=key)
    assert [json.loads((tmp_path / f"devices_{n}" / "run.json").read_text())["n_devices"] for n in (2, 1)] == [2, 1]
