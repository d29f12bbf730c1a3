"""``equitrain-jax finetune``: adapt a converted model to labelled structures."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a converted model on labelled structures (extxyz, …)")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--train", required=True, help="training structures with energies and forces")
    p.add_argument("--valid", help="validation structures (default: split off --valid-fraction of --train)")
    p.add_argument("--valid-fraction", type=float, default=0.2)
    p.add_argument("--strategy", choices=("lora", "delta", "freeze", "full", "scratch"), default="lora")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: rank)")
    p.add_argument("--targets", nargs="+", help="parameter path patterns, e.g. 'interactions.*.linear*' 'products.*'")
    p.add_argument("--l2sp-weight", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress", help="'none' to train without stress")
    p.add_argument("--head", default=None)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import ase.io

    from equitrain_jax.train.data import LabelKeys
    from equitrain_jax.train.finetune import finetune, split_train_valid

    train = ase.io.read(args.train, index=":")
    if args.valid:
        valid = ase.io.read(args.valid, index=":")
    else:
        train, valid = split_train_valid(train, args.valid_fraction, args.seed)
    keys = LabelKeys(args.energy_key, args.forces_key, None if args.stress_key == "none" else args.stress_key)
    result = finetune(
        args.model, train, valid, args.output, strategy=args.strategy, epochs=args.epochs,
        learning_rate=args.lr, batch_size=args.batch_size, rank=args.rank, alpha=args.alpha,
        targets=args.targets, l2sp_weight=args.l2sp_weight, keys=keys, head=args.head,
        dtype=args.dtype, seed=args.seed,
    )
    first, last = result.history[0], result.history[-1]
    print(
        f"validation force MAE {first['forces_mae_mev_per_a']:.1f} → {last['forces_mae_mev_per_a']:.1f} meV/Å, "
        f"energy MAE {first['energy_mae_mev_per_atom']:.1f} → {last['energy_mae_mev_per_atom']:.1f} meV/atom; "
        f"fine-tuned model in {Path(args.output) / 'model'}"
    )
