"""``equitrain-jax finetune``: adapt a converted model to labelled structures."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from equitrain_jax.train.finetune import E0_CHOICES, STRATEGIES
    from equitrain_jax.train.loop import SCHEDULES

    p = sub.add_parser("finetune", help="fine-tune a converted model on labelled structures (extxyz, …)")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--train", required=True, help="training structures with energies and forces (any ASE-readable file)")
    p.add_argument("--valid", help="validation structures (default: split off --valid-fraction of --train)")
    p.add_argument("--valid-fraction", type=float, default=0.2)
    p.add_argument("--strategy", choices=STRATEGIES, default="lora")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: rank)")
    p.add_argument("--targets", nargs="+", help="parameter path patterns, e.g. 'interactions.*.linear*' 'products.*'")
    p.add_argument("--l2sp-weight", type=float, default=1e-3)
    p.add_argument("--replay", help="multihead: structures that keep training the pretrained head")
    p.add_argument("--new-head", default="Default", help="multihead: name of the new head (the pretrained one becomes pt_head)")
    p.add_argument("--e0s", choices=E0_CHOICES, default="foundation", help="keep the model's E0s or refit them to --train")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip-norm", type=float, default=10.0)
    p.add_argument("--schedule", choices=SCHEDULES, default="constant")
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--plateau-patience", type=int, default=5)
    p.add_argument("--plateau-factor", type=float, default=0.5)
    p.add_argument("--ema", type=float, default=None, metavar="DECAY", help="keep an EMA of the weights, e.g. 0.99")
    p.add_argument("--patience", type=int, default=None, help="early stopping: epochs without a better validation loss")
    p.add_argument("--loss", choices=("huber", "mse", "mae"), default="huber")
    p.add_argument("--huber-delta", type=float, default=0.01)
    p.add_argument("--weights", type=float, nargs=3, default=(10.0, 100.0, 1000.0), metavar=("ENERGY", "FORCES", "STRESS"))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--devices", type=int, default=1, help="shard every batch over this many devices")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress", help="'none' to train without stress")
    p.add_argument("--head", default=None)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def _read(path: str, what: str) -> list:
    import ase.io

    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if Path(path).stat().st_size == 0:
        raise ValueError(f"{what} file {path} is empty")
    try:
        structures = ase.io.read(path, index=":")
    except Exception as error:  # ASE raises many kinds for unreadable files
        raise ValueError(f"{what} file {path}: cannot read structures ({type(error).__name__}: {error})") from error
    if not structures:
        raise ValueError(f"{what} file {path} holds no structures")
    return structures


def run(args: argparse.Namespace) -> None:
    from equitrain_jax.train.data import LabelKeys
    from equitrain_jax.train.finetune import finetune, split_train_valid
    from equitrain_jax.train.loop import TrainConfig
    from equitrain_jax.train.loss import LossConfig

    train = _read(args.train, "training")
    if args.valid:
        valid = _read(args.valid, "validation")
    else:
        train, valid = split_train_valid(train, args.valid_fraction, args.seed)
    replay = _read(args.replay, "replay") if args.replay else []
    keys = LabelKeys(args.energy_key, args.forces_key, None if args.stress_key == "none" else args.stress_key)
    train_config = TrainConfig(
        epochs=args.epochs, learning_rate=args.lr, weight_decay=args.weight_decay, clip_norm=args.clip_norm,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs, plateau_factor=args.plateau_factor,
        plateau_patience=args.plateau_patience, ema_decay=args.ema, early_stopping_patience=args.patience,
        seed=args.seed,
    )
    energy_weight, forces_weight, stress_weight = args.weights
    loss_config = LossConfig(energy_weight, forces_weight, stress_weight, args.loss, args.huber_delta)
    result = finetune(
        args.model, train, valid, args.output, strategy=args.strategy, train_config=train_config,
        loss_config=loss_config, batch_size=args.batch_size, rank=args.rank, alpha=args.alpha,
        targets=args.targets, l2sp_weight=args.l2sp_weight, keys=keys, head=args.head, dtype=args.dtype,
        e0s=args.e0s, replay=replay, new_head=args.new_head, n_devices=args.devices, resume=args.resume,
    )
    first, best = result.history[0], min(result.history, key=lambda h: h["valid_loss"])
    print(
        f"validation (best epoch {best['epoch']}): force MAE {first['forces_mae_mev_per_a']:.1f} → "
        f"{best['forces_mae_mev_per_a']:.1f} meV/Å, energy MAE {first['energy_mae_mev_per_atom']:.2f} → "
        f"{best['energy_mae_mev_per_atom']:.2f} meV/atom; fine-tuned model in {Path(args.output) / 'model'}"
    )
