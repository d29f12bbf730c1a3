"""``equitrain-jax finetune``: adapt a converted model to labelled structures and/or DFT phonons
(phonopy references, trained through exact Hessian-vector products) and/or DFT third-order force
constants (phono3py references, trained through exact third derivatives)."""

from __future__ import annotations

import argparse
import math
import os
import shlex
from pathlib import Path

from equitrain_jax.cli import checks
from equitrain_jax.train.config import (
    DIRECTION_MODES,
    DTYPES,
    E0_CHOICES,
    LOSS_KINDS,
    MONITORS,
    SCHEDULES,
    STRATEGIES,
    THIRD_ORDER_MODES,
    FinetuneConfig,
    HessianLossConfig,
    LossConfig,
    ThirdOrderLossConfig,
    TrainConfig,
    check_replay,
)
from equitrain_jax.train.outputs import CHECKPOINTS, check_run_directory, checkpoint_progress, read_run_record

TRAIN, LOSS, JOB, HESSIAN = TrainConfig(), LossConfig(), FinetuneConfig(), HessianLossConfig()  # the library's defaults
THIRD = ThirdOrderLossConfig()

OPTIONS = {  # settings field -> option
    "epochs": "--epochs", "learning_rate": "--lr", "weight_decay": "--weight-decay", "clip_norm": "--clip-norm",
    "schedule": "--schedule", "warmup_epochs": "--warmup-epochs", "plateau_factor": "--plateau-factor",
    "plateau_patience": "--plateau-patience", "ema_decay": "--ema", "early_stopping_patience": "--patience",
    "seed": "--seed", "energy_weight": "--weights ENERGY", "forces_weight": "--weights FORCES",
    "stress_weight": "--weights STRESS", "weights": "--weights", "kind": "--loss", "huber_delta": "--huber-delta", "strategy": "--strategy",
    "rank": "--rank", "alpha": "--alpha", "targets": "--targets", "l2sp_weight": "--l2sp-weight",
    "new_head": "--new-head", "head": "--head", "batch_size": "--batch-size", "dtype": "--dtype", "e0s": "--e0s",
    "n_devices": "--devices", "phonon_batch_size": "--phonon-batch-size", "monitor": "--monitor",
}
HESSIAN_OPTIONS = {"weight": "--hessian-weight", "kind": "--hessian-loss", "huber_delta": "--hessian-huber-delta",
                   "directions": "--hessian-directions", "mode": "--hessian-mode", "sequential": "--hessian-sequential"}
THIRD_ORDER_OPTIONS = {"weight": "--third-order-weight", "kind": "--third-order-loss",
                       "huber_delta": "--third-order-huber-delta", "directions": "--third-order-directions",
                       "mode": "--third-order-mode", "sequential": "--third-order-sequential"}


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a converted model on labelled structures (extxyz, …) and/or DFT "
                                        "phonons (phonopy files)",
                       description="Strategies: " + "; ".join(f"{name}: {what}" for name, what in STRATEGIES.items()))
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--train", help="training structures with energies and forces (any ASE-readable file)")
    p.add_argument("--valid", help="validation structures (default: split off --valid-fraction of --train)")
    p.add_argument("--phonons", nargs="+", action="extend", default=[], metavar="YAML",
                   help="phonopy references to train on through the Hessian term (phonopy_params.yaml with "
                        "displacements and forces or force constants, or phonopy_disp.yaml with FORCE_SETS or "
                        "FORCE_CONSTANTS beside it); repeat or list several; alone (no --train) trains on phonons only")
    p.add_argument("--valid-phonons", nargs="+", action="extend", default=[], metavar="YAML",
                   help="phonopy references whose phonon-frequency MAE (THz) is reported each epoch (default with "
                        "--phonons and no --train: the --phonons references)")
    p.add_argument("--hessian-weight", type=float, default=HESSIAN.weight, help="weight of the Hessian term")
    p.add_argument("--hessian-directions", type=int, default=HESSIAN.directions, metavar="K",
                   help="directions v per phonon reference and step (H·v against Φ·v)")
    p.add_argument("--hessian-mode", choices=list(DIRECTION_MODES), default=HESSIAN.mode,
                   help="; ".join(f"{name}: {what}" for name, what in DIRECTION_MODES.items()))
    p.add_argument("--hessian-sequential", action=argparse.BooleanOptionalAction, default=HESSIAN.sequential,
                   help="compute the K products one after another, each recomputed in the backward pass "
                        "(default): memory of one direction instead of K; --no-hessian-sequential vmaps them")
    p.add_argument("--hessian-loss", choices=LOSS_KINDS, default=HESSIAN.kind)
    p.add_argument("--hessian-huber-delta", type=float, default=HESSIAN.huber_delta, help="eV/Å²")
    p.add_argument("--phono3py", nargs="+", action="extend", default=[], metavar="YAML",
                   help="phono3py references to train on through the third-order term (phono3py_disp.yaml with "
                        "FORCES_FC3 beside it, or phono3py_params.yaml with forces); repeat or list several")
    p.add_argument("--third-order-weight", type=float, default=THIRD.weight, help="weight of the third-order term")
    p.add_argument("--third-order-directions", type=int, default=THIRD.directions, metavar="K",
                   help="direction pairs (u, v) per phono3py reference and step (Φ3[u, v] against DFT's)")
    p.add_argument("--third-order-sequential", action=argparse.BooleanOptionalAction, default=THIRD.sequential,
                   help="compute the K third-order products one after another, each recomputed in the backward "
                        "pass (default): memory of one pair instead of K; --no-third-order-sequential vmaps them")
    p.add_argument("--third-order-mode", choices=list(THIRD_ORDER_MODES), default=THIRD.mode,
                   help="; ".join(f"{name}: {what}" for name, what in THIRD_ORDER_MODES.items()))
    p.add_argument("--third-order-loss", choices=LOSS_KINDS, default=THIRD.kind)
    p.add_argument("--third-order-huber-delta", type=float, default=THIRD.huber_delta, help="eV/Å³")
    p.add_argument("--phono3py-fc2", action="store_true",
                   help="also train the Hessian term on the --phono3py references' fc2")
    p.add_argument("--phono3py-forces", action="store_true",
                   help="also train on the --phono3py references' displaced supercells as structures with forces "
                        "only (no energies: their energy term is masked)")
    p.add_argument("--no-anharmonicity-check", action="store_true",
                   help="skip the report of the mean Grüneisen parameter before and after fine-tuning (from the "
                        "model's exact fc2 and fc3 on the --phonons / --phono3py material)")
    p.add_argument("--phonon-batch-size", type=int, default=JOB.phonon_batch_size,
                   help="phonon (and phono3py) references per optimiser step")
    p.add_argument("--monitor", choices=list(MONITORS), default=TRAIN.monitor,
                   help="the validation metric for the best model, --patience and the plateau schedule: "
                        + "; ".join(f"{name}: {what}" for name, what in MONITORS.items()))
    p.add_argument("--valid-fraction", type=float, default=0.2)
    p.add_argument("--strategy", choices=list(STRATEGIES), default=JOB.strategy)
    p.add_argument("--rank", type=int, default=JOB.rank, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=JOB.alpha, help="LoRA alpha (default: rank)")
    p.add_argument("--targets", nargs="+", help="parameter path patterns, e.g. 'interactions.*.linear*' 'products.*'")
    p.add_argument("--l2sp-weight", type=float, default=JOB.l2sp_weight)
    p.add_argument("--replay", help="multihead: structures that keep training the pretrained head")
    p.add_argument("--new-head", default=JOB.new_head,
                   help="multihead: name of the new head (the pretrained one becomes pt_head)")
    p.add_argument("--e0s", choices=E0_CHOICES, default=JOB.e0s, help="keep the model's E0s or refit them to --train")
    p.add_argument("--epochs", type=int, default=TRAIN.epochs)
    p.add_argument("--lr", type=float, default=TRAIN.learning_rate)
    p.add_argument("--weight-decay", type=float, default=TRAIN.weight_decay)
    p.add_argument("--clip-norm", type=float, default=TRAIN.clip_norm)
    p.add_argument("--schedule", choices=SCHEDULES, default=TRAIN.schedule)
    p.add_argument("--warmup-epochs", type=int, default=TRAIN.warmup_epochs)
    p.add_argument("--plateau-patience", type=int, default=TRAIN.plateau_patience)
    p.add_argument("--plateau-factor", type=float, default=TRAIN.plateau_factor)
    p.add_argument("--ema", type=float, default=TRAIN.ema_decay, metavar="DECAY", help="keep an EMA of the weights, e.g. 0.99")
    p.add_argument("--patience", type=int, default=TRAIN.early_stopping_patience,
                   help="early stopping: epochs without a better validation loss")
    p.add_argument("--loss", choices=LOSS_KINDS, default=LOSS.kind)
    p.add_argument("--huber-delta", type=float, default=LOSS.huber_delta)
    p.add_argument("--weights", type=float, nargs=3, default=(LOSS.energy_weight, LOSS.forces_weight, LOSS.stress_weight),
                   metavar=("ENERGY", "FORCES", "STRESS"))
    p.add_argument("--batch-size", type=int, default=JOB.batch_size)
    p.add_argument("--devices", type=int, default=JOB.n_devices, help="shard every batch over this many devices")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress", help="'none' to train without stress")
    p.add_argument("--head", default=JOB.head)
    p.add_argument("--dtype", choices=DTYPES, default=JOB.dtype)
    p.add_argument("--seed", type=int, default=TRAIN.seed)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in OUTPUT from its last checkpoint (it must be the same run; more "
                            "--epochs or a larger --patience may be given)")
    again.add_argument("--overwrite", action="store_true", help="replace the run in OUTPUT")
    p.add_argument("-o", "--output", required=True, help="output directory (new or empty, unless --resume or --overwrite)")
    p.set_defaults(func=run, check=check, interrupted=interrupted)


def check(args: argparse.Namespace) -> None:
    """Every option and input, before any work: settings, the model directory, the output
    directory, and the structure files (read here, once)."""
    args.train_config = checks.settings(
        TrainConfig, OPTIONS, epochs=args.epochs, learning_rate=args.lr, weight_decay=args.weight_decay,
        clip_norm=args.clip_norm, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        plateau_factor=args.plateau_factor, plateau_patience=args.plateau_patience, ema_decay=args.ema,
        early_stopping_patience=args.patience, monitor=args.monitor, seed=args.seed,
    )
    energy_weight, forces_weight, stress_weight = args.weights
    args.loss_config = checks.settings(LossConfig, OPTIONS, energy_weight=energy_weight, forces_weight=forces_weight,
                                       stress_weight=stress_weight, kind=args.loss, huber_delta=args.huber_delta)
    args.job = checks.settings(
        FinetuneConfig, OPTIONS, strategy=args.strategy, rank=args.rank, alpha=args.alpha, targets=args.targets,
        l2sp_weight=args.l2sp_weight, new_head=args.new_head, head=args.head, batch_size=args.batch_size,
        dtype=args.dtype, e0s=args.e0s, n_devices=args.devices, phonon_batch_size=args.phonon_batch_size,
    )
    args.hessian_config = checks.settings(
        HessianLossConfig, HESSIAN_OPTIONS, weight=args.hessian_weight, kind=args.hessian_loss,
        huber_delta=args.hessian_huber_delta, directions=args.hessian_directions, mode=args.hessian_mode,
        sequential=args.hessian_sequential,
    )
    args.third_order_config = checks.settings(
        ThirdOrderLossConfig, THIRD_ORDER_OPTIONS, weight=args.third_order_weight, kind=args.third_order_loss,
        huber_delta=args.third_order_huber_delta, directions=args.third_order_directions, mode=args.third_order_mode,
        sequential=args.third_order_sequential,
    )
    if not 0 < args.valid_fraction < 1:
        raise ValueError(f"--valid-fraction must lie in (0, 1), got {args.valid_fraction}")
    if not args.train and not args.phonons and not args.phono3py:
        raise ValueError("nothing to train on: give --train structures, --phonons or --phono3py references")
    for flag in ("--phono3py-fc2", "--phono3py-forces"):
        if getattr(args, flag[2:].replace("-", "_")) and not args.phono3py:
            raise ValueError(f"{flag} uses the --phono3py references; give --phono3py")
    structures = bool(args.train) or args.phono3py_forces
    check_replay(args.strategy, int(args.replay is not None))
    if args.e0s == "refit" and not args.train:
        raise ValueError("--e0s refit fits the E0s to the --train energies; phonon references carry none")
    phonon_validation = bool(args.valid_phonons) or not structures
    if args.monitor == "phonon_mae" and not phonon_validation:
        raise ValueError("--monitor phonon_mae needs --valid-phonons references (with --train, the validation set is "
                         "structures)")
    if args.monitor in ("forces_mae", "energy_mae") and not (structures or args.valid):
        raise ValueError(f"--monitor {args.monitor} needs validation structures: give --valid")
    checks.model_directory(args.model)
    check_run_directory(args.output, args.resume, args.overwrite, flags=("--resume", "--overwrite"),
                        base_model=args.model, names=("--model", "-o"))
    for option in ("--phonons", "--valid-phonons"):
        for path in getattr(args, option[2:].replace("-", "_")):
            checks.input_file(path, option)
    args.train_set = checks.structures(args.train, "--train") if args.train else []
    args.valid_set = checks.structures(args.valid, "--valid") if args.valid else None
    args.replay_set = checks.structures(args.replay, "--replay") if args.replay else []
    args.phono3py_refs = [third_order_reference(path) for path in args.phono3py]
    if args.train and args.valid_set is None and len(args.train_set) < 2:
        raise ValueError(f"--train {args.train} holds one structure: give --valid, or at least 2 structures to split")


def third_order_reference(path: str):
    """A phono3py reference read and checked (phono3py only, no JAX), the error naming --phono3py."""
    from equitrain_jax.train.third_order_data import read_third_order_reference

    checks.input_file(path, "--phono3py")
    try:
        return read_third_order_reference(path)
    except ValueError as error:
        raise ValueError(f"--phono3py {error}") from error


def run(args: argparse.Namespace) -> None:
    import json

    from equitrain_jax.train.data import LabelKeys
    from equitrain_jax.train.finetune import check_phonon_references, finetune, phonon_references, split_train_valid
    from equitrain_jax.train.third_order_data import displaced_supercells, phonon_reference_from_phono3py

    train = args.train_set + [atoms for item, _ in args.phono3py_refs if args.phono3py_forces
                              for atoms in displaced_supercells(item)]
    valid = args.valid_set or []
    if train and args.valid_set is None:
        train, valid = split_train_valid(train, args.valid_fraction, args.seed)
    elements = json.loads((Path(args.model) / checks.MODEL_CONFIG).read_text())["atomic_numbers"]
    phonons, valid_phonons = (phonon_references(args.phonons, "--phonons"),
                              phonon_references(args.valid_phonons, "--valid-phonons"))
    if args.phono3py_fc2:
        phonons += [phonon_reference_from_phono3py(*reference) for reference in args.phono3py_refs]
    check_phonon_references(phonons, elements, args.hessian_config, "--phonons")
    check_phonon_references(valid_phonons, elements, HessianLossConfig(), "--valid-phonons")
    keys = LabelKeys(args.energy_key, args.forces_key, None if args.stress_key == "none" else args.stress_key)
    result = finetune(
        args.model, train, valid, args.output, args.job, train_config=args.train_config, loss_config=args.loss_config,
        keys=keys, replay=args.replay_set, phonons=phonons, valid_phonons=valid_phonons,
        hessian_config=args.hessian_config, phono3py=args.phono3py_refs, third_order_config=args.third_order_config,
        check_anharmonicity=not args.no_anharmonicity_check, resume=args.resume, overwrite=args.overwrite,
    )
    print(summary_line(result.history, args.train_config.monitor, Path(args.output) / "model"))
    anharmonicity = read_run_record(Path(args.output)).get("anharmonicity", [])
    if anharmonicity:
        from equitrain_jax.phonons.anharmonicity import report_line

        for report in anharmonicity:
            print(report_line(report))


def summary_line(history: list[dict], monitor: str, model: Path) -> str:
    """The validation errors before and at the best epoch (by ``monitor``), and where the model is."""
    from equitrain_jax.train.config import MONITORED_KEYS

    first, best = history[0], min(history, key=lambda h: h[MONITORED_KEYS[monitor]])
    shown = []
    if "phonon_mae_thz" in first:
        shown.append(f"phonon MAE {first['phonon_mae_thz']:.3f} → {best['phonon_mae_thz']:.3f} THz")
    if "forces_mae_mev_per_a" in first:
        shown.append(f"force MAE {first['forces_mae_mev_per_a']:.1f} → {best['forces_mae_mev_per_a']:.1f} meV/Å")
    if "energy_mae_mev_per_atom" in first and not math.isnan(first["energy_mae_mev_per_atom"]):  # NaN: no energies
        shown.append(f"energy MAE {first['energy_mae_mev_per_atom']:.2f} → {best['energy_mae_mev_per_atom']:.2f} meV/atom")
    return f"validation (best epoch {best['epoch']}): {', '.join(shown)}; fine-tuned model in {model}"


def _command(args: argparse.Namespace, flag: str) -> str:
    """This command line with ``flag`` (--resume or --overwrite) in place of either."""
    kept = [a for a in args.argv if not any(a.startswith("--") and len(a) >= 4 and full.startswith(a)
                                                for full in ("--resume", "--overwrite"))]
    return shlex.join(["equitrain-jax", *kept, flag])


def interrupted(args: argparse.Namespace) -> str:
    """Where the run is saved and the command that resumes it."""
    progress = checkpoint_progress(args.output)
    last = Path(args.output) / CHECKPOINTS / "last"
    written_now = progress is not None and (args.resume or os.path.getmtime(last / "state.json") >= args.started)
    if not written_now:
        return f"no checkpoint of this run was written; start it again with: {_command(args, '--overwrite')}"
    done = f"{progress['epoch']} of {args.epochs} epochs done"
    if progress["position"]:
        done += f" and {progress['position']} steps of the next"
    return f"the run is saved in {last} ({done}); resume it with: {_command(args, '--resume')}"
