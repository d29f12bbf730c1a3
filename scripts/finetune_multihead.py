"""Multi-head replay fine-tuning: a new head learns the target data while replay structures
(e.g. a subset of the pretraining data, labelled as in pretraining) keep training the original head.

    python scripts/finetune_multihead.py --model models/mp0-medium --train target.extxyz \
        --valid target_valid.extxyz --replay replay.extxyz --epochs 50 -o runs/multihead

The fine-tuned model has heads ``pt_head`` (the pretrained one) and ``Default`` (the new one,
chosen by default by `equitrain_jax.Calculator`).
"""

from __future__ import annotations

import argparse

import ase.io

from equitrain_jax.train import TrainConfig
from equitrain_jax.train.finetune import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--replay", required=True)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    result = finetune(
        args.model, ase.io.read(args.train, ":"), ase.io.read(args.valid, ":"), args.output,
        strategy="multihead", replay=ase.io.read(args.replay, ":"),
        train_config=TrainConfig(epochs=args.epochs, learning_rate=args.lr, ema_decay=0.99), dtype="float32",
    )
    best = min(result.history, key=lambda h: h["valid_loss"])
    print(f"best epoch {best['epoch']}: force MAE {best['forces_mae_mev_per_a']:.1f} meV/Å; model in {args.output}/model")


if __name__ == "__main__":
    main()
