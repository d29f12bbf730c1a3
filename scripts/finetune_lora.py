"""LoRA fine-tuning with the library functions (what ``equitrain-jax finetune`` does, step by step).

    python scripts/finetune_lora.py --model models/sevennet-0 --train train.extxyz --valid valid.extxyz \
        --rank 4 --epochs 100 -o runs/lora [--devices 2]

Each step is an ordinary function you can swap: the adapter (`lora_finetune` → `l2sp_finetune`,
`partial_finetune`, …), the optimiser (any optax transform), the loss weights, the batches.
On a multi-host cluster call ``jax.distributed.initialize()`` before anything else; `data_mesh`
then spans every host's devices.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import jax
import numpy as np

from equitrain_jax.adapters import lora_finetune
from equitrain_jax.models.io import ModelBundle, load_model, save_model
from equitrain_jax.train import LossConfig, TrainConfig, data_mesh, fit, labelled_batches, sharded_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="converted model directory")
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    bundle = load_model(args.model)
    config = bundle.config
    dtype = np.float32  # float32 trains faster; phonons later use float64
    variables = jax.tree_util.tree_map(
        lambda x: np.asarray(x, dtype) if np.asarray(x).dtype.kind == "f" else np.asarray(x), bundle.variables
    )
    train, valid = ase.io.read(args.train, ":"), ase.io.read(args.valid, ":")
    if args.devices > 1:  # every batch split over the devices of a one-axis mesh
        mesh = data_mesh(args.devices)
        batches = [sharded_batches(s, config.r_max, config.atomic_numbers, args.batch_size, args.devices, dtype=dtype)
                   for s in (train, valid)]
    else:
        mesh = None
        batches = [labelled_batches(s, config.r_max, config.atomic_numbers, args.batch_size, dtype=dtype)
                   for s in (train, valid)]

    strategy = lora_finetune(variables, rank=args.rank, key=jax.random.PRNGKey(0))
    result = fit(
        ModelBundle(config, variables).module(dtype), strategy, *batches,
        TrainConfig(epochs=args.epochs, learning_rate=args.lr, schedule="plateau", ema_decay=0.99),
        LossConfig(energy_weight=10, forces_weight=100, stress_weight=1000),  # the paper's weights
        checkpoint_dir=Path(args.output) / "checkpoints", mesh=mesh,
        log=lambda e: print(f"epoch {e['epoch']:4d}  loss {e['train_loss']:.4g}  "
                            f"F MAE {e['forces_mae_mev_per_a']:.1f} meV/Å  E MAE {e['energy_mae_mev_per_atom']:.2f} meV/atom"),
    )
    merged = strategy.merge(jax.device_get(result.trainable), strategy.frozen)  # plain parameter tree
    save_model(Path(args.output) / "model", config, jax.tree_util.tree_map(np.asarray, merged))
    print(f"fine-tuned model in {Path(args.output) / 'model'}")


if __name__ == "__main__":
    main()
