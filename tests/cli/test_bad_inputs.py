"""Bad input through the real command line: every command, as a careless or hostile user would
type it.  Each case runs ``equitrain-jax`` in a fresh process and must end with exit status 2,
one line ``equitrain-jax CMD: error: ...`` naming the file, option or problem, no traceback,
and nothing written.  Most are refused before JAX is loaded (a fraction of a second each); the
cases marked ``after_jax`` are found by the library (unknown element, too many devices, a
checkpoint of another run, a reference of another crystal) and still before any work.

The cases run concurrently in a module fixture; each test checks one outcome.  The counts in
``docs/reliability.md`` come from this module.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import NamedTuple

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from equitrain_jax import cli
from equitrain_jax.phonons.conductivity import phono3py_with_displacements

from .conftest import equitrain_jax

EXAMPLE_AL = Path(cli.__file__).parents[1] / "examples" / "Al" / "phonopy_params.yaml"


class Case(NamedTuple):
    name: str
    args: tuple[str, ...]
    expected: tuple[str, ...]  # substrings of the error line
    argparse: bool = False  # argparse's own refusal: its usage lines come before the error line


def case(name: str, args: str, *expected: str, argparse: bool = False) -> Case:
    return Case(name, tuple(args.split()), expected, argparse)


CASES = [
    # convert
    case("convert-no-source", "convert -o new", "exactly one of"),
    case("convert-two-sources", "convert base.model --architecture mp0a-small -o new", "exactly one of"),
    case("convert-missing-file", "convert missing.model -o new", "missing.model does not exist"),
    case("convert-output-not-empty", "convert notes.txt -o full", "full is not empty", "--overwrite"),
    case("convert-output-is-a-file", "convert notes.txt -o notes.txt", "notes.txt is a file"),
    case("convert-output-under-a-file", "convert notes.txt -o notes.txt/model", "is a file, not a directory"),
    case("convert-channels-zero", "convert --architecture mp0a-small --channels 0 -o new", "--channels must be at least 1"),
    case("convert-unknown-architecture-after_jax", "convert --architecture mp9 -o new", "--architecture 'mp9' is not one of"),
    case("convert-channels-not-a-number", "convert --architecture mp0a-small --channels many -o new",
         "argument --channels: invalid int value", argparse=True),
    # export
    case("export-missing-model", "export missing --template base.model -o out.model", "missing does not exist"),
    case("export-not-a-model", "export full --template base.model -o out.model", "full is not an equitrain-jax model"),
    case("export-missing-template", "export base --template missing.model -o out.model", "--template missing.model does not exist"),
    case("export-output-exists", "export base --template base.model -o notes.txt", "notes.txt exists", "--overwrite"),
    case("export-output-is-a-directory", "export base --template notes.txt -o full", "full is a directory"),
    case("export-into-its-template", "export base --template base.model -o base.model --overwrite",
         "-o base.model is the --template file"),
    case("export-sevennet-model", "export sevennet --template base.model -o out.model",
         "holds a equitrain-jax/sevennet model", "only MACE models"),
    # evaluate
    case("evaluate-garbage-text", "evaluate garbage.xyz --model base", "garbage.xyz", "not a structure file"),
    case("evaluate-garbage-binary", "evaluate binary.extxyz --model base", "binary.extxyz", "not a structure file"),
    case("evaluate-empty-file", "evaluate empty.xyz --model base", "empty.xyz is empty"),
    case("evaluate-missing-file", "evaluate missing.xyz --model base", "missing.xyz does not exist"),
    case("evaluate-directory-as-file", "evaluate full --model base", "full is a directory"),
    case("evaluate-missing-model", "evaluate cu.extxyz --model missing", "--model missing does not exist"),
    case("evaluate-output-exists", "evaluate cu.extxyz --model base -o notes.txt", "notes.txt exists"),
    case("evaluate-output-under-a-file", "evaluate cu.extxyz --model base -o notes.txt/out.xyz", "is a file, not a directory"),
    case("evaluate-output-unknown-format", "evaluate cu.extxyz --model base -o out.unknownformat", "ASE cannot write"),
    case("evaluate-output-is-the-input", "evaluate cu.extxyz --model base -o cu.extxyz --overwrite", "one of the input files"),
    case("evaluate-nan-positions", "evaluate nan.extxyz --model base", "nan.extxyz", "not finite"),
    case("evaluate-bad-dtype", "evaluate cu.extxyz --model base --dtype float16", "--dtype", argparse=True),
    case("evaluate-unknown-element-after_jax", "evaluate gold.extxyz --model base", "Au"),
    case("evaluate-run-directory", "evaluate cu.extxyz --model done", "is a fine-tuning run's directory",
         "its model is done/model"),
    case("evaluate-several-into-one-structure-format", "evaluate train.xyz --model base -o out.vasp",
         "-o out.vasp: a vasp file holds one structure, and there are 8"),
    # finetune
    case("finetune-garbage-train", "finetune --model base --train garbage.xyz -o new", "--train garbage.xyz", "not a structure"),
    case("finetune-missing-valid", "finetune --model base --train train.xyz --valid missing.xyz -o new",
         "--valid missing.xyz does not exist"),
    case("finetune-negative-lr", "finetune --model base --train train.xyz --lr -1 -o new", "--lr must be a positive number"),
    case("finetune-zero-epochs", "finetune --model base --train train.xyz --epochs 0 -o new", "--epochs must be an integer >= 1"),
    case("finetune-zero-batch", "finetune --model base --train train.xyz --batch-size 0 -o new", "--batch-size must be"),
    case("finetune-valid-fraction", "finetune --model base --train train.xyz --valid-fraction 1.5 -o new", "--valid-fraction"),
    case("finetune-ema-above-one", "finetune --model base --train train.xyz --ema 1.5 -o new", "--ema must lie in (0, 1)"),
    case("finetune-all-weights-zero", "finetune --model base --train train.xyz --weights 0 0 0 -o new", "nothing to train on"),
    case("finetune-zero-rank", "finetune --model base --train train.xyz --rank 0 -o new", "--rank must be"),
    case("finetune-zero-patience", "finetune --model base --train train.xyz --patience 0 -o new", "--patience must be"),
    case("finetune-multihead-without-replay", "finetune --model base --train train.xyz --strategy multihead -o new",
         "needs replay structures"),
    case("finetune-replay-without-multihead", "finetune --model base --train train.xyz --replay valid.xyz -o new",
         "'multihead' only"),
    case("finetune-not-a-model", "finetune --model full --train train.xyz -o new", "--model full is not an equitrain-jax model"),
    case("finetune-output-under-a-file", "finetune --model base --train train.xyz -o notes.txt/run", "is a file, not a directory"),
    case("finetune-one-structure", "finetune --model base --train cu.extxyz -o new", "holds one structure"),
    case("finetune-over-a-finished-run", "finetune --model base --train train.xyz --valid valid.xyz -o done",
         "done is not empty", "--resume", "--overwrite"),
    case("finetune-resume-nothing", "finetune --model base --train train.xyz --resume -o full", "nothing to resume in full"),
    case("finetune-resume-and-overwrite", "finetune --model base --train train.xyz --resume --overwrite -o done",
         "not allowed with argument", argparse=True),
    case("finetune-unknown-strategy", "finetune --model base --train train.xyz --strategy adapters -o new",
         "--strategy", argparse=True),
    case("finetune-resume-another-run-after_jax",
         "finetune --model other --train long_train.xyz --valid valid.xyz --lr 0.02 --batch-size 3 --resume -o done",
         "belongs to another run", "base_model: sha256", "train.learning_rate: 0.01 in the checkpoint, 0.02 now",
         "finetune.batch_size: 2 in the checkpoint, 3 now", "train_data: sha256"),
    case("finetune-nothing-to-train-on", "finetune --model base -o new", "nothing to train on", "--train", "--phonons"),
    case("finetune-missing-phonons", "finetune --model base --phonons missing.yaml -o new",
         "--phonons missing.yaml does not exist"),
    case("finetune-missing-valid-phonons", "finetune --model base --phonons cu_phonons.yaml --valid-phonons missing.yaml "
         "-o new", "--valid-phonons missing.yaml does not exist"),
    case("finetune-phonons-directory", "finetune --model base --phonons full -o new", "--phonons full is a directory"),
    case("finetune-zero-hessian-directions", "finetune --model base --phonons cu_phonons.yaml --hessian-directions 0 -o new",
         "--hessian-directions must be an integer >= 1"),
    case("finetune-negative-hessian-weight", "finetune --model base --phonons cu_phonons.yaml --hessian-weight -1 -o new",
         "--hessian-weight must be >= 0"),
    case("finetune-zero-hessian-delta", "finetune --model base --phonons cu_phonons.yaml --hessian-huber-delta 0 -o new",
         "--hessian-huber-delta must be a positive number"),
    case("finetune-zero-phonon-batch", "finetune --model base --phonons cu_phonons.yaml --phonon-batch-size 0 -o new",
         "--phonon-batch-size must be"),
    case("finetune-unknown-hessian-mode", "finetune --model base --phonons cu_phonons.yaml --hessian-mode diagonal -o new",
         "--hessian-mode", argparse=True),
    case("finetune-refit-e0s-without-energies", "finetune --model base --phonons cu_phonons.yaml --e0s refit -o new",
         "--e0s refit", "--train"),
    case("finetune-monitor-phonons-without-reference", "finetune --model base --train train.xyz --phonons cu_phonons.yaml "
         "--monitor phonon_mae -o new", "--monitor phonon_mae needs --valid-phonons"),
    case("finetune-monitor-forces-without-structures", "finetune --model base --phonons cu_phonons.yaml --monitor forces_mae "
         "-o new", "--monitor forces_mae needs validation structures"),
    case("finetune-phonons-garbage-after_jax", "finetune --model base --phonons garbage.yaml -o new",
         "--phonons garbage.yaml", "not a readable phonopy YAML"),
    case("finetune-phonons-unknown-element-after_jax", f"finetune --model base --phonons {EXAMPLE_AL} -o new",
         "--phonons", "elements ['Al'] are not among the model's ['Cu']"),
    case("finetune-too-many-devices-after_jax", "finetune --model base --train train.xyz --devices 4 --batch-size 4 -o new",
         "4 devices"),
    case("finetune-missing-phono3py", "finetune --model base --phono3py missing.yaml -o new",
         "--phono3py missing.yaml does not exist"),
    case("finetune-phono3py-garbage", "finetune --model base --phono3py garbage.yaml -o new", "--phono3py garbage.yaml",
         "not a readable phono3py YAML"),
    case("finetune-phono3py-without-forces", "finetune --model base --phono3py disp_only/phono3py_disp.yaml -o new",
         "--phono3py disp_only/phono3py_disp.yaml", "holds no forces and no FORCES_FC3 lies beside it"),
    case("finetune-phono3py-given-phonopy", "finetune --model base --phono3py cu_phonons.yaml -o new",
         "--phono3py cu_phonons.yaml", "without displacement pairs", "--phonons"),
    case("finetune-zero-third-order-directions", "finetune --model base --phono3py garbage.yaml --third-order-directions 0 "
         "-o new", "--third-order-directions must be an integer >= 1"),
    case("finetune-negative-third-order-weight", "finetune --model base --phono3py garbage.yaml --third-order-weight -1 "
         "-o new", "--third-order-weight must be >= 0"),
    case("finetune-unknown-third-order-mode", "finetune --model base --phono3py garbage.yaml --third-order-mode pairs "
         "-o new", "--third-order-mode", argparse=True),
    case("finetune-phono3py-forces-without-phono3py", "finetune --model base --train train.xyz --phono3py-forces -o new",
         "--phono3py-forces uses the --phono3py references"),
    case("finetune-model-inside-output", "finetune --model done/model --train train.xyz --valid valid.xyz -o done "
         "--overwrite", "--model done/model is model of -o done, which this run replaces"),
    case("finetune-learning-rate-nan", "finetune --model base --train train.xyz --lr nan -o new",
         "--lr must be a finite number, got nan"),
    # phonons
    case("phonons-supercell-zero", "phonons cu.extxyz --model base --supercell 0 0 0 -o new", "--supercell", "0 0 0"),
    case("phonons-negative-min-length", "phonons cu.extxyz --model base --min-length -1 -o new", "--min-length"),
    case("phonons-zero-fmax", "phonons cu.extxyz --model base --fmax 0 -o new", "--fmax"),
    case("phonons-overlapping-atoms", "phonons overlap.extxyz --model base -o new", "overlapping", "0.000 Å apart"),
    case("phonons-molecule", "phonons water.xyz --model base -o new", "periodic in 3 directions"),
    case("phonons-flat-cell", "phonons flat.extxyz --model base -o new", "has no volume"),
    case("phonons-garbage-structure", "phonons garbage.xyz --model base -o new", "garbage.xyz", "not a structure"),
    case("phonons-output-not-empty", "phonons cu.extxyz --model base -o full", "full is not empty"),
    case("phonons-missing-reference", "phonons cu.extxyz --model base --reference missing.yaml -o new",
         "missing.yaml does not exist"),
    case("phonons-reference-of-another-material-after_jax", f"phonons cu.extxyz --model base --reference {EXAMPLE_AL} -o new",
         "--reference", "different crystal", "Al", "Cu"),
    case("phonons-supercell-two-numbers", "phonons cu.extxyz --model base --supercell 2 2 -o new", "--supercell",
         argparse=True),
    case("phonons-born-missing", "phonons cu.extxyz --model base --born missing.BORN -o new",
         "--born file missing.BORN does not exist"),
    case("phonons-born-without-charges", "phonons cu.extxyz --model base --born short.BORN -o new",
         "BORN file short.BORN", "Cu (atom 1)"),
    case("phonons-born-not-neutral", "phonons nacl.extxyz --model base --born charged.BORN -o new",
         "BORN file charged.BORN", "charge neutrality"),
    case("phonons-reference-not-yaml", "phonons cu.extxyz --model base --reference garbage.yaml -o new",
         "garbage.yaml: not a readable phonopy YAML (ParserError"),
    case("phonons-unknown-element-after_jax", "phonons gold.extxyz --model base --supercell 1 1 1 -o new", "Au"),
    # phonons --many
    case("phonons-many-and-structure", "phonons cu.extxyz --many train.xyz --model base -o new", "exactly one of STRUCTURE"),
    case("phonons-many-missing-file", "phonons --many missing.xyz --model base -o new", "--many missing.xyz does not exist"),
    case("phonons-many-garbage", "phonons --many garbage.xyz --model base -o new", "--many garbage.xyz", "not a structure"),
    case("phonons-many-output-not-empty", "phonons --many train.xyz --model base -o full", "full is not empty",
         "--overwrite"),
    case("phonons-many-with-reference", "phonons --many train.xyz --model base --reference cu_phonons.yaml -o new",
         "--reference: only with one STRUCTURE"),
    case("phonons-many-zero-mesh", "phonons --many train.xyz --model base --mesh 8 0 8 -o new", "--mesh", "8 0 8"),
    case("phonons-many-zero-batch", "phonons --many train.xyz --model base --batch-atoms 0 -o new",
         "--batch-atoms must be at least 1"),
    case("phonons-many-coordinator-alone", "phonons --many train.xyz --model base --coordinator localhost:1234 -o new",
         "--coordinator, --num-processes and --process-id go together"),
    case("phonons-many-process-out-of-range", "phonons --many train.xyz --model base --coordinator localhost:1234 "
         "--num-processes 2 --process-id 2 -o new", "--process-id must be 0 … 1", "got 2"),
    case("phonons-many-bad-coordinator", "phonons --many train.xyz --model base --coordinator localhost "
         "--num-processes 2 --process-id 0 -o new", "--coordinator takes HOST:PORT", "'localhost'"),
    case("phonons-mesh-without-many", "phonons cu.extxyz --model base --mesh 8 8 8 -o new", "--mesh: only with --many"),
    # qha
    case("qha-born-garbage", "qha nacl.extxyz --model base --born garbage.xyz -o new", "BORN file garbage.xyz",
         "Na (atom 1), Cl (atom 2)"),
    case("qha-born-not-neutral", "qha nacl.extxyz --model base --born charged.BORN -o new", "BORN file charged.BORN",
         "charge neutrality"),
    case("qha-mesh-infinite", "qha cu.extxyz --model base --mesh inf -o new", "--mesh must be a finite number, got inf"),
    case("qha-tmax-infinite", "qha cu.extxyz --model base --tmax inf -o new", "--tmax must be a finite number"),
    case("qha-reference-energies-not-numbers-after_jax", "qha cu.extxyz --model base --reference badqha -o new",
         "volumes.json: static_energies_eV must be a list of numbers"),
    # conductivity
    case("conductivity-born-empty", "conductivity nacl.extxyz --model base --born empty.xyz -o new",
         "--born file empty.xyz is empty"),
    case("conductivity-born-without-charges", "conductivity cu.extxyz --model base --born short.BORN -o new",
         "BORN file short.BORN", "Cu (atom 1)"),
    case("conductivity-temperature-nan", "conductivity cu.extxyz --model base --temperatures 300 nan -o new",
         "--temperatures must be a finite number, got 300.0 nan"),
    case("conductivity-output-under-a-file", "conductivity cu.extxyz --model base -o notes.txt/kappa",
         "notes.txt", "is a file"),
    # demo, and no command
    case("demo-unknown-material", "demo --material Unobtainium -o new", "no example data for 'Unobtainium'"),
    case("demo-zero-epochs", "demo --epochs 0 -o new", "--epochs must be at least 1"),
    case("demo-output-not-empty", "demo -o full", "full is not empty"),
    case("demo-unknown-architecture-after_jax", "demo --mace --architecture mp9 -o new",
         "--architecture 'mp9' is not one of"),
    case("unknown-command", "train --model base", "invalid choice: 'train'", argparse=True),
]


def write_inputs(root: Path, workspace: Path) -> None:
    """The files the cases name, in ``root``."""
    for name in ("base", "other"):
        (root / name).symlink_to(workspace / name, target_is_directory=True)
    for name in ("train.xyz", "valid.xyz", "long_train.xyz", "cu.extxyz", "cu_phonons.yaml"):
        (root / name).symlink_to(workspace / name)
    (root / "garbage.yaml").write_text("phonopy: [this is\n  not: a phonopy file\n")
    (root / "disp_only").mkdir()
    phono3py_with_displacements(bulk("Cu", "fcc", a=3.6), 2).save(root / "disp_only" / "phono3py_disp.yaml")
    (root / "garbage.xyz").write_text("this is not a structure\n12 apples\n")
    (root / "binary.extxyz").write_bytes(np.random.default_rng(0).bytes(512))
    (root / "empty.xyz").write_text("")
    (root / "notes.txt").write_text("a file the user wrote\n")
    (root / "base.model").write_text("not a torch model\n")
    (root / "full").mkdir()
    (root / "sevennet").mkdir()
    (root / "sevennet" / "config.json").write_text('{"format": "equitrain-jax/sevennet"}\n')
    (root / "badqha").mkdir()
    (root / "badqha" / "volumes.json").write_text('{"phonopy_params": ["a.yaml", "b.yaml", "c.yaml", "d.yaml", "e.yaml"], '
                                                  '"static_energies_eV": "abc"}\n')
    (root / "full" / "keep.txt").write_text("the user's own file\n")
    gold = bulk("Cu", "fcc", a=3.6)
    gold.numbers[:] = 79
    ase.io.write(root / "gold.extxyz", gold)
    ase.io.write(root / "nan.extxyz", Atoms("Cu", positions=[[np.nan, 0, 0]], cell=[3, 3, 3], pbc=True))
    ase.io.write(root / "overlap.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0]], cell=[3, 3, 3], pbc=True))
    ase.io.write(root / "water.xyz", molecule("H2O"))
    ase.io.write(root / "flat.extxyz", Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=True))
    ase.io.write(root / "nacl.extxyz", bulk("NaCl", "rocksalt", a=5.64))
    (root / "short.BORN").write_text("14.4\n2 0 0 0 2 0 0 0 2\n")  # ε∞, no Born charges
    (root / "charged.BORN").write_text("14.4\n2 0 0 0 2 0 0 0 2\n1 0 0 0 1 0 0 0 1\n1 0 0 0 1 0 0 0 1\n")


def finished_run(root: Path) -> None:
    """``done/``: a finished one-epoch LoRA run (lr 0.01, batch size 2), fine-tuned in this process."""
    cli.main(["finetune", "--model", str(root / "base"), "--train", str(root / "train.xyz"), "--valid",
              str(root / "valid.xyz"), "--epochs", "1", "--lr", "0.01", "--batch-size", "2", "-o", str(root / "done")])


@pytest.fixture(scope="module")
def outcomes(workspace, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    write_inputs(root, workspace)
    finished_run(root)
    before = {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip((c.name for c in CASES), pool.map(lambda c: equitrain_jax(*c.args, cwd=root), CASES)))
    after = {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")}
    return done, before, after


def test_enough_cases_across_every_command():
    commands = {c.args[0] for c in CASES}
    assert len(CASES) >= 40 and {"convert", "export", "evaluate", "finetune", "phonons", "qha", "conductivity",
                                 "demo"} <= commands


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clean_line(bad, outcomes):
    done, _, _ = outcomes
    result = done[bad.name]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    prefix = "equitrain-jax: error:" if bad.name == "unknown-command" else f"equitrain-jax {bad.args[0]}: error:"
    assert lines and lines[-1].startswith(prefix), lines
    if not bad.argparse:
        assert len(lines) == 1, lines
    for text in bad.expected:
        assert text in lines[-1], (text, lines[-1])
    assert result.stdout == "", result.stdout


def test_nothing_written_by_a_refused_command(outcomes):
    """No bad input creates, changes or removes a file: the finished runs, the user's own files
    and the would-be outputs are as before."""
    _, before, after = outcomes
    assert after == before


def test_overlapping_atoms_are_evaluated_with_a_warning(workspace, tmp_path, capsys):
    """``evaluate`` computes what it is given, but says when two atoms overlap (0.2 Å apart here)."""
    ase.io.write(tmp_path / "overlap.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [0.2, 0, 0]], cell=[3, 3, 3], pbc=True))
    cli.main(["evaluate", str(tmp_path / "overlap.extxyz"), "--model", str(workspace / "base")])
    captured = capsys.readouterr()
    assert "equitrain-jax evaluate: warning: structure 0: atoms 0 (Cu) and 1 (Cu) are 0.200 Å apart" in captured.err
    assert "max|F|" in captured.out


def test_help_gives_every_default():
    """``--help`` shows the default of every option that has one (the docs promise it; options
    without help text showed nothing before), and the library's own value."""
    import re

    from equitrain_jax.train.config import LossConfig, TrainConfig

    text = " ".join(cli._subcommand_parser(cli.parser(), "finetune").format_help().split())
    assert f"--epochs EPOCHS default: {TrainConfig().epochs}" in text
    assert f"--clip-norm CLIP_NORM default: {TrainConfig().clip_norm}" in text
    assert f"--huber-delta HUBER_DELTA default: {LossConfig().huber_delta}" in text
    assert "--weight-decay WEIGHT_DECAY default: 0.0" in text
    for command in ("convert", "evaluate", "finetune", "phonons", "qha", "conductivity", "demo"):
        subparser = cli._subcommand_parser(cli.parser(), command)
        formatter = subparser._get_formatter()
        for action in subparser._actions:
            if action.option_strings and action.nargs != 0 and action.default is not None and action.default is not False:
                assert re.search("default", formatter._get_help_string(action), re.I), (command, action.option_strings)
