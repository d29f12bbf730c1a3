"""The fine-tuning job: converted model + labelled structures and/or phonon references →
fine-tuned model directory.

Composed of the pieces beside it: settings validated when built (`equitrain_jax.train.config`),
the output-directory rule and the files written (`equitrain_jax.train.outputs`), strategies by
name (`equitrain_jax.train.strategies`), the run's fingerprint (`equitrain_jax.train.fingerprint`)
and the epoch loop (`equitrain_jax.train.loop.fit`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import ase
import jax
import numpy as np
from phonopy import Phonopy
from tqdm import tqdm

from equitrain_jax.models.io import ModelBundle, load_model
from equitrain_jax.potential import DTYPES, resolve_head
from equitrain_jax.train.checkpoint import read_checkpoint_record
from equitrain_jax.data import device_arrays, element_indices, pad_to_bucket
from equitrain_jax.train.config import (
    FinetuneConfig,
    HessianLossConfig,
    LossConfig,
    ThirdOrderLossConfig,
    TrainConfig,
    check_replay,
)
from equitrain_jax.train.data import LabelKeys, labelled_batches, sharded_batches
from equitrain_jax.train.e0s import refit_e0s
from equitrain_jax.train.fingerprint import (
    as_json,
    model_digest,
    resume_changes,
    run_fingerprint,
    structures_digest,
    tree_digest,
)
from equitrain_jax.train.hessian_loss import PhononValidation
from equitrain_jax.train.loop import FitResult, data_mesh, fit
from equitrain_jax.train.outputs import (
    CHECKPOINTS,
    check_run_directory,
    clear_run_outputs,
    write_results,
    write_run_record,
)
from equitrain_jax.train.phonon_data import (
    PhononBatches,
    PhononDataError,
    PhononItem,
    phonon_graph,
    phonon_item_from_phonopy,
    read_phonon_reference,
)
from equitrain_jax.train.strategies import REGISTRY, StrategyInputs, build_strategy, with_new_head
from equitrain_jax.train.third_order import ThirdOrderBatches
from equitrain_jax.train.third_order_data import (
    ThirdOrderDataError,
    ThirdOrderItem,
    phonon_reference_from_phono3py,
    read_third_order_reference,
)

__all__ = ["FinetuneConfig", "PhononReference", "ThirdOrderReference", "finetune", "phonon_references",
           "split_train_valid", "third_order_references", "with_new_head"]

PhononSource = Union[str, os.PathLike, Phonopy]
"""A phonopy reference: a file `read_phonon_reference` reads, or a `Phonopy` object with force constants."""

PhononReference = tuple[PhononItem, Phonopy]
"""A phonopy reference read: its training item and the `Phonopy` object (frequencies, NAC)."""

ThirdOrderReference = tuple[ThirdOrderItem, Any]
"""A phono3py reference read: its training item and the `phono3py.Phono3py` object (fc2, fc3)."""


def third_order_references(sources: Sequence[Union[str, os.PathLike, ThirdOrderReference]],
                           what: str = "phono3py reference") -> list[ThirdOrderReference]:
    """Each source read once (`read_third_order_reference`; a reference already read taken as it is).

    Raises:
        ThirdOrderDataError: naming ``what`` and the file for anything that cannot be trained on.
    """
    references = []
    for source in sources:
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], ThirdOrderItem):
            references.append(source)
            continue
        try:
            references.append(read_third_order_reference(source))
        except ThirdOrderDataError as error:
            raise ThirdOrderDataError(f"{what} {error}") from error
    return references


def split_train_valid(
    structures: Sequence[ase.Atoms], valid_fraction: float, seed: int
) -> tuple[list[ase.Atoms], list[ase.Atoms]]:
    """Random split; at least one structure on each side."""
    if len(structures) < 2:
        raise ValueError(f"need at least 2 structures to split off a validation set, got {len(structures)}")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
    order = np.random.default_rng(seed).permutation(len(structures))
    n_valid = min(max(1, round(valid_fraction * len(structures))), len(structures) - 1)
    return [structures[i] for i in order[n_valid:]], [structures[i] for i in order[:n_valid]]


def _in_dtype(variables: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: np.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a), variables
    )


def phonon_references(sources: Sequence[Union[PhononSource, PhononReference]],
                      what: str = "phonon reference") -> list[PhononReference]:
    """Each source read once (`read_phonon_reference`; a `Phonopy` object, or a reference already
    read, taken as it is).

    Raises:
        PhononDataError: naming ``what`` and the file for anything that cannot be trained on.
    """
    references = []
    for source in sources:
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], PhononItem):
            references.append(source)
        elif isinstance(source, Phonopy):
            references.append((phonon_item_from_phonopy(source, f"{what} (Phonopy object)"), source))
        else:
            try:
                references.append(read_phonon_reference(source))
            except PhononDataError as error:
                raise PhononDataError(f"{what} {error}") from error
    return references


def check_phonon_references(references: Sequence[PhononReference], atomic_numbers: Sequence[int],
                            hessian_config: HessianLossConfig, what: str) -> None:
    """Every element of every reference's supercell is one the model knows, and each reference
    has what the direction mode needs (raw: displaced supercells with forces); else a
    `PhononDataError` naming ``what``, the file and the problem."""
    from ase.data import chemical_symbols

    for item, _ in references:
        unknown = sorted(set(int(z) for z in item.supercell.numbers) - set(int(z) for z in atomic_numbers))
        if unknown:
            raise PhononDataError(
                f"{what} {item.source}: elements {[chemical_symbols[z] for z in unknown]} are not among the model's "
                f"{[chemical_symbols[z] for z in atomic_numbers]}")
        if hessian_config.mode == "raw" and len(item.displacements) == 0:
            raise PhononDataError(f"{what} {item.source}: direction mode 'raw' needs displaced supercells with forces; "
                                  "the reference has force constants only")


def phonon_item_arrays(item: PhononItem) -> list[np.ndarray]:
    """What a phonon item is, for fingerprints: its supercell (numbers, positions Å, cell Å),
    force constants (eV/Å²), displacements (Å) and forces (eV/Å)."""
    return [np.asarray(item.supercell.numbers), item.supercell.positions, item.supercell.cell.array,
            item.force_constants, item.displacements, item.forces]


def finetune_fingerprint(bundle: ModelBundle, config: FinetuneConfig, train: Sequence[ase.Atoms],
                         valid: Sequence[ase.Atoms], replay: Sequence[ase.Atoms], keys: LabelKeys,
                         phonons: Sequence[PhononReference] = (), valid_phonons: Sequence[PhononReference] = (),
                         hessian_config: HessianLossConfig = HessianLossConfig()) -> dict:
    """What defines a fine-tuning run besides its optimiser and loss settings: content hashes of
    the base model and of each set of structures with their labels, the label keys and the job's
    settings (see `equitrain_jax.train.fingerprint`); with phonon data also their content hashes
    and the Hessian settings."""
    label_keys = tuple(keys)
    facts = {
        "base_model": model_digest(bundle.config, bundle.variables),
        "train_data": structures_digest(train, label_keys),
        "valid_data": structures_digest(valid, label_keys),
        "replay_data": structures_digest(replay, label_keys),
        "keys": keys._asdict(),
        "finetune": dataclasses.asdict(config),
    }
    if phonons or valid_phonons:
        facts["phonon_data"] = tree_digest([phonon_item_arrays(item) for item, _ in phonons])
        facts["valid_phonon_data"] = tree_digest([phonon_item_arrays(item) for item, _ in valid_phonons])
        facts["hessian"] = dataclasses.asdict(hessian_config)
    return facts


def prepared_model(
    bundle: ModelBundle, config: FinetuneConfig, train: Sequence[ase.Atoms], keys: LabelKeys
) -> tuple[ModelBundle, int, Optional[int]]:
    """The model to train, the index of the head ``train`` trains, and that of the head the replay
    structures train (None without replay): the chosen head, or for strategy ``multihead`` a new
    one (see `with_new_head`); E0s refitted to ``train`` if ``config.e0s`` says so."""
    head_index, replay_head = resolve_head(bundle.config.heads, config.head), None
    if REGISTRY[config.strategy].adds_head:
        bundle = with_new_head(bundle, config.new_head, head_index)
        replay_head, head_index = head_index, len(bundle.config.heads) - 1
    if config.e0s == "refit":
        if not train:
            raise ValueError("e0s='refit' fits the E0s to the training structures' energies, and there are none "
                             "(phonon references carry no energies); keep e0s='foundation'")
        bundle = refit_e0s(bundle, train, keys, head_index)
    return bundle, head_index, replay_head


def padded_batches(structures: list, heads: Any, model_config: Any, config: FinetuneConfig, keys: LabelKeys,
                   mesh: Optional[jax.sharding.Mesh]) -> list:
    """Labelled batches of ``config.batch_size`` structures in the training dtype, stacked over the
    mesh's devices if there is a mesh."""
    dtype = DTYPES[config.dtype]
    if mesh is None:
        return labelled_batches(structures, model_config.r_max, model_config.atomic_numbers, config.batch_size, keys,
                                heads, dtype)
    return sharded_batches(structures, model_config.r_max, model_config.atomic_numbers, config.batch_size,
                           config.n_devices, keys, heads, dtype)


def finetune(
    model_dir: str | Path | ModelBundle,
    train: Sequence[ase.Atoms],
    valid: Sequence[ase.Atoms],
    output: str | Path,
    config: Optional[FinetuneConfig] = None,
    *,
    train_config: TrainConfig = TrainConfig(),
    loss_config: LossConfig = LossConfig(),
    keys: LabelKeys = LabelKeys(),
    replay: Sequence[ase.Atoms] = (),
    phonons: Sequence[Union[PhononSource, PhononReference]] = (),
    valid_phonons: Sequence[Union[PhononSource, PhononReference]] = (),
    hessian_config: HessianLossConfig = HessianLossConfig(),
    phono3py: Sequence[Union[str, os.PathLike, ThirdOrderReference]] = (),
    third_order_config: ThirdOrderLossConfig = ThirdOrderLossConfig(),
    check_anharmonicity: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **settings: Any,
) -> FitResult:
    """Fine-tune the model in ``model_dir`` on ``train`` and ``phonons``, validate on ``valid`` and
    ``valid_phonons``, write ``output`` (see `equitrain_jax.train.outputs` for its files).

    ``config``: the strategy and the job's settings, or give them as keywords (``strategy``,
    ``rank``, … : the fields of `FinetuneConfig`).  ``replay``: structures that keep training
    the pretrained head (strategy ``multihead`` only).  ``phonons``: phonopy references (files or
    `Phonopy` objects, see `phonon_references`) trained through the Hessian term of
    ``hessian_config``; with them ``train`` may be empty.  ``valid_phonons``: references whose
    phonon-frequency MAE (THz), Hessian errors and Hessian term join each epoch's validation;
    without them and without ``valid`` structures, the training references are validated on.
    ``phono3py``: phono3py references (files or references read, see `third_order_references`)
    trained through the third-order term of ``third_order_config``; with neither ``valid``,
    ``valid_phonons`` nor ``phonons``, their fc2 phonons are validated on.  ``check_anharmonicity``:
    with phonon or phono3py references, report the model's mean Grüneisen parameter on each of
    their materials before and after (`anharmonicity_reports`) in ``run.json``.
    ``output`` must be new or empty, unless ``resume`` (continue from ``output/checkpoints/last``:
    the checkpoint must belong to this very run, see `equitrain_jax.train.fingerprint`) or
    ``overwrite`` (replace the run there).

    Raises:
        ValueError: a bad setting or bad data (missing or NaN labels, unknown elements, empty
            sets, unreadable phonon references: `PhononDataError`), or a checkpoint of another
            run, before anything is compiled or written.
        FileExistsError: ``output`` holds something and neither ``resume`` nor ``overwrite``.
        FileNotFoundError: ``resume`` without a checkpoint.
    """
    if isinstance(train, ase.Atoms) or isinstance(valid, ase.Atoms):
        raise TypeError("train and valid are lists of structures; for one, pass [atoms]")
    if config is None:
        job = {field.name for field in dataclasses.fields(FinetuneConfig)}
        owners = {"train_config=TrainConfig(...)": TrainConfig, "loss_config=LossConfig(...)": LossConfig,
                  "hessian_config=HessianLossConfig(...)": HessianLossConfig}
        for name in sorted(set(settings) - job):
            home = [where for where, cls in owners.items() if name in {f.name for f in dataclasses.fields(cls)}]
            raise TypeError(f"finetune got an unexpected keyword argument {name!r}"
                            + (f"; it belongs in {home[0]}" if home else f"; the job's settings are {sorted(job)}"))
        config = FinetuneConfig(**settings)
    elif settings:
        raise TypeError(f"give the settings in config or as keywords, not both: {sorted(settings)}")
    check_replay(config.strategy, len(replay))
    if not train and not phonons and not phono3py:
        raise ValueError("nothing to train on: no training structures, phonon references or phono3py references")
    if train and not valid and not valid_phonons:
        raise ValueError(f"need validation structures (or validation phonon references), got {len(valid)}")
    if config.e0s == "refit" and not train:
        raise ValueError("e0s='refit' fits the E0s to the training structures' energies, and there are none "
                         "(phonon references carry no energies); keep e0s='foundation'")
    output = check_run_directory(output, resume, overwrite,
                                 base_model=None if isinstance(model_dir, ModelBundle) else model_dir)

    bundle = model_dir if isinstance(model_dir, ModelBundle) else load_model(model_dir)
    phonon_refs = phonon_references(phonons, "phonon reference")
    valid_refs = phonon_references(valid_phonons, "validation phonon reference")
    check_phonon_references(phonon_refs, bundle.config.atomic_numbers, hessian_config, "phonon reference")
    check_phonon_references(valid_refs, bundle.config.atomic_numbers, HessianLossConfig(), "validation phonon reference")
    third_refs = third_order_references(phono3py)
    check_phonon_references(third_refs, bundle.config.atomic_numbers, HessianLossConfig(), "phono3py reference")
    validated_on_training_phonons = not valid and not valid_refs
    if validated_on_training_phonons:
        valid_refs = phonon_refs or [phonon_reference_from_phono3py(*reference) for reference in third_refs]
    fingerprint = finetune_fingerprint(bundle, config, train, valid, replay, keys, phonon_refs, valid_refs,
                                       hessian_config)
    if third_refs:
        fingerprint["third_order_data"] = tree_digest([[np.asarray(item.supercell.numbers), item.supercell.positions,
                                                        item.supercell.cell.array, item.fc3, item.fc2, item.forces]
                                                       for item, _ in third_refs])
        fingerprint["third_order"] = dataclasses.asdict(third_order_config)
    if resume:  # refuse a checkpoint of another run before any work (fit checks again when it loads it)
        where = output / CHECKPOINTS / "last"
        record = read_checkpoint_record(where)
        resume_changes(record["metadata"].get("fingerprint"), run_fingerprint(train_config, loss_config, fingerprint),
                       record["epoch"], str(where))

    bundle, head_index, replay_head = prepared_model(bundle, config, train, keys)
    model_config, dtype = bundle.config, DTYPES[config.dtype]
    mesh = data_mesh(config.n_devices) if config.n_devices > 1 else None
    train_batches = padded_batches(list(train) + list(replay), [head_index] * len(train) + [replay_head] * len(replay),
                                   model_config, config, keys, mesh) if train else []
    valid_batches = padded_batches(list(valid), head_index, model_config, config, keys, mesh) if valid else []
    cutoff, elements = model_config.r_max, model_config.atomic_numbers
    phonon_batches = None
    if phonon_refs:
        phonon_batches = PhononBatches(
            [item for item, _ in phonon_refs],
            [phonon_graph(item, cutoff, elements, head_index) for item, _ in phonon_refs],
            config.phonon_batch_size, hessian_config.directions, hessian_config.mode, train_config.seed,
            config.n_devices, dtype)
    third_order_batches = None
    if third_refs:
        third_order_batches = ThirdOrderBatches(
            [item for item, _ in third_refs],
            [phonon_graph(item, cutoff, elements, head_index) for item, _ in third_refs],
            config.phonon_batch_size, third_order_config.directions, third_order_config.mode, train_config.seed,
            config.n_devices, dtype)
    validations = [PhononValidation(item, reference, device_arrays(pad_to_bucket(phonon_graph(item, cutoff, elements,
                                                                                               head_index)), dtype))
                   for item, reference in valid_refs]

    variables = _in_dtype(bundle.variables, dtype)
    if train_batches:
        example = train_batches[0] if mesh is None else jax.tree_util.tree_map(lambda x: x[0], train_batches[0])
    else:
        example = validations[0].graph if validations else device_arrays(
            pad_to_bucket(phonon_graph((phonon_refs or third_refs)[0][0], cutoff, elements, head_index)), dtype)
    trained_numbers = [atoms.numbers for atoms in [*train, *replay]] + [
        item.supercell.numbers for item, _ in [*phonon_refs, *third_refs]]
    trained_elements = element_indices(np.concatenate(trained_numbers), model_config.atomic_numbers)
    strategy = build_strategy(
        StrategyInputs(variables, model_config, example, jax.random.PRNGKey(train_config.seed), dtype,
                       trained_elements),
        config
    )
    module = ModelBundle(model_config, variables).module(dtype)

    if overwrite:
        clear_run_outputs(output)
    output.mkdir(parents=True, exist_ok=True)
    record = {
        "base_model": str(model_dir) if not isinstance(model_dir, ModelBundle) else "(in memory)",
        **dataclasses.asdict(config), "heads": list(model_config.heads), "trained_head": model_config.heads[head_index],
        "n_train": len(train), "n_valid": len(valid), "n_replay": len(replay),
        "trained_elements": [int(model_config.atomic_numbers[i]) for i in trained_elements],
        "keys": keys._asdict(), "loss": dataclasses.asdict(loss_config), "train": dataclasses.asdict(train_config),
        "data_sha256": {name: fingerprint[f"{name}_data"] for name in ("train", "valid", "replay")},
        "base_model_sha256": fingerprint["base_model"],
    }
    if phonon_refs or valid_refs:
        record.update({
            "hessian": dataclasses.asdict(hessian_config),
            "phonons": [item.provenance() for item, _ in phonon_refs],
            "valid_phonons": [item.provenance() for item, _ in valid_refs],
            "valid_phonons_are_the_training_references": validated_on_training_phonons,
        })
        record["data_sha256"].update({name: fingerprint[f"{name}_data"] for name in ("phonon", "valid_phonon")})
    if third_refs:
        record.update({"third_order": dataclasses.asdict(third_order_config),
                       "phono3py": [item.provenance() for item, _ in third_refs]})
        record["data_sha256"]["third_order"] = fingerprint["third_order_data"]
    if not resume:
        write_run_record(output, as_json({**record, "resumes": []}))

    steps_per_epoch = max(len(train_batches), len(phonon_batches or ()), len(third_order_batches or ()))
    bar = tqdm(total=train_config.epochs * steps_per_epoch, desc=f"fine-tuning ({config.strategy})", unit="step",
               disable=not progress)

    def on_step(step: int, _metrics: dict) -> None:
        bar.update(step - bar.n)

    def log(entry: dict) -> None:
        bar.set_postfix_str(progress_line(entry))

    try:
        result = fit(module, strategy, train_batches, valid_batches, train_config, loss_config,
                     checkpoint_dir=output / CHECKPOINTS, resume=resume, mesh=mesh, log=log, on_step=on_step,
                     fingerprint=fingerprint, phonons=phonon_batches, valid_phonons=validations,
                     hessian_config=hessian_config, third_order=third_order_batches,
                     third_order_config=third_order_config)
    finally:
        bar.close()
    merged = strategy.merge(jax.device_get(result.trainable), strategy.frozen)
    write_results(output, model_config, merged, result.trainable, result.history)
    if check_anharmonicity and (phonon_refs or third_refs):
        record["anharmonicity"] = anharmonicity_reports(ModelBundle(model_config, variables),
                                                        ModelBundle(model_config, jax.device_get(merged)),
                                                        model_config.heads[head_index], phonon_refs, third_refs)
    if resume or "anharmonicity" in record:  # the settings it ran with now, each resume, the guard's report
        write_run_record(output, as_json({**record, "resumes": list(result.resumes)}))
    return result


def anharmonicity_reports(before: ModelBundle, after: ModelBundle, head: str, phonons: Sequence[PhononReference],
                          phono3py: Sequence[ThirdOrderReference]) -> list[dict]:
    """The guard against a fine-tune that silently changes κ: the mean Grüneisen parameter γ̄(300 K)
    of the model before and after, from its exact fc2 and fc3 (see
    `equitrain_jax.phonons.anharmonicity`), once per material of the references (the phono3py
    references' DFT γ̄ beside it), in float64."""
    from equitrain_jax.phonons.anharmonicity import anharmonicity_report
    from equitrain_jax.potential import Potential

    models = [Potential(bundle, dtype="float64", head=head) for bundle in (before, after)]
    seen, reports = set(), []
    for template, reference in [(ph3, ph3) for _, ph3 in phono3py] + [(phonon, None) for _, phonon in phonons]:
        material = (np.asarray(template.unitcell.numbers).tobytes(), np.round(template.unitcell.cell, 3).tobytes(),
                    np.asarray(template.supercell_matrix).tobytes())
        if material not in seen:
            seen.add(material)
            reports.append(anharmonicity_report(*models, template, reference))
    return reports


def progress_line(entry: dict) -> str:
    """An epoch's history entry as the progress bar shows it: the training loss and the
    validation errors there are (forces meV/Å, energies meV/atom, phonon frequencies THz)."""
    shown = [f"epoch {entry['epoch']} loss {entry['train_loss']:.4g}"]
    if "forces_mae_mev_per_a" in entry:
        energy = entry.get("energy_mae_mev_per_atom", math.nan)  # NaN: no validation energies (force-only data)
        shown.append(f"valid: F {entry['forces_mae_mev_per_a']:.1f} meV/Å"
                     + ("" if math.isnan(energy) else f", E {energy:.1f} meV/atom"))
    if "phonon_mae_thz" in entry:
        shown.append(f"ω MAE {entry['phonon_mae_thz']:.3f} THz")
    return " | ".join(shown)
