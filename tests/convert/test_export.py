"""Model → ``equitrain-jax export`` → mace-torch ``.model`` that mace-torch evaluates to the JAX numbers."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from common import ELEMENTS, structures, torch_reference

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from models.test_parity import TOL64, assert_parity  # noqa: E402

from equitrain_jax.cli import export as export_command  # noqa: E402
from equitrain_jax.convert import convert_model  # noqa: E402
from equitrain_jax.convert.architectures import ARCHITECTURES, build_mace_torch  # noqa: E402
from equitrain_jax.convert.to_mace_torch import export_to_mace_torch, with_weights  # noqa: E402
from equitrain_jax.models.io import ModelBundle, save_model  # noqa: E402
from equitrain_jax.potential import Potential, enable_float64  # noqa: E402

CASES = {
    "mp0a-large": dict(architecture="mp0a-large"),
    "mp0b3": dict(architecture="mp0b3"),
    "two-heads": dict(architecture="mp0a-medium", heads=("pbe", "r2scan")),
    "mace-soft-float32": dict(architecture="mp0b", model_class="MACE", distance_transform="Soft", dtype="float32"),
    "one-head": dict(architecture="mp0a-medium"),
    "two-heads-H-O": dict(architecture="mp0a-medium", heads=("pbe", "r2scan"), atomic_numbers=(1, 8)),
    # MACE-MH-1: non-linear blocks, agnostic product, edge irreps, six heads (reduced basis: built in seconds)
    "mh1": dict(architecture=dataclasses.replace(ARCHITECTURES["mh1"], use_reduced_cg=True)),
}
ROUND_TRIP = ("mp0a-large", "mp0b3", "two-heads", "mace-soft-float32", "mh1")


@functools.cache
def build(case: str):
    """A random-weight mace-torch model, built once per test session; tests only read it."""
    kwargs = {"atomic_numbers": ELEMENTS, **CASES[case]}
    return build_mace_torch(channels=8, seed=11, **kwargs)


@functools.cache
def converted(case: str) -> ModelBundle:
    return ModelBundle(*convert_model(build(case)))


def rerandomised(module, seed: int):
    """A copy of ``module`` with new random values in every parameter and in the E0, scale and
    shift buffers: the same architecture with other weights."""
    module = copy.deepcopy(module)
    generator = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    names = [name for name, _ in module.named_parameters()]
    names += [name for name in ("atomic_energies_fn.atomic_energies", "scale_shift.scale", "scale_shift.shift") if name in state]
    with torch.no_grad():
        for name in names:
            state[name].copy_(torch.randn(state[name].shape, generator=generator, dtype=state[name].dtype))
    return module


def perturbed(bundle: ModelBundle, seed: int) -> ModelBundle:
    """Every weight, E0, scale and shift moved by random noise, as fine-tuning might."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda w: w + 0.1 * rng.normal(size=w.shape), bundle.variables["params"])
    cfg = bundle.config
    e0 = np.asarray(cfg.atomic_energies) + 0.5 * rng.normal(size=np.shape(cfg.atomic_energies))
    config = dataclasses.replace(
        cfg,
        atomic_energies=tuple(map(tuple, e0.tolist())),
        scale=tuple((np.asarray(cfg.scale) * (1 + 0.2 * rng.normal(size=len(cfg.scale)))).tolist()),
        shift=tuple((np.asarray(cfg.shift) + 0.2 * rng.normal(size=len(cfg.shift))).tolist()),
    )
    return ModelBundle(config, {**bundle.variables, "params": params})


@pytest.mark.parametrize("case", ROUND_TRIP)
def test_converted_weights_come_back_bit_for_bit(case):
    """Convert model A and export its unchanged variables into a template of the same architecture
    with other random weights, E0s, scale and shift: the result's state dict is A's, bit for bit."""
    source = build(case)
    template = rerandomised(source, seed=12)
    exported = with_weights(converted(case), template).state_dict()
    expected, before = source.state_dict(), copy.deepcopy(template.state_dict())
    assert exported.keys() == expected.keys()
    for name, tensor in expected.items():
        assert exported[name].dtype == tensor.dtype, name
        assert torch.equal(exported[name], tensor), name
    for name, tensor in template.state_dict().items():
        assert torch.equal(tensor, before[name]), f"the template's {name} was modified"
    assert all(not torch.equal(before[name], expected[name]) for name, p in source.named_parameters() if p.numel())


def test_perturbed_two_head_model_gives_jax_numbers_in_mace_torch(tmp_path):
    """Noise on every JAX parameter and on E0s/scale/shift of both heads; mace-torch's calculator
    on the exported model matches the JAX model in float64 on every test structure (second head,
    so that a head mix-up shows)."""
    enable_float64()
    model = perturbed(converted("two-heads"), seed=6)
    path = export_to_mace_torch(model, build("two-heads"), tmp_path / "finetuned.model")
    exported = torch.load(path, map_location="cpu", weights_only=False)
    atoms = list(structures().values())
    reference = torch_reference(exported, atoms, head="r2scan")
    assert_parity(Potential(model, dtype="float64", head="r2scan").evaluate(atoms), reference, TOL64)


@pytest.mark.parametrize(
    "case, message",
    [
        ("two-heads-H-O", "atomic_numbers"),
        ("mp0b3", "interaction_first"),
        ("mp0a-large", "hidden_irreps"),
        ("mace-soft-float32", "model_class"),
    ],
)
def test_architecture_mismatch_names_it(case, message):
    with pytest.raises(ValueError, match=f"template's architecture: .*{message}: model"):
        with_weights(converted(case), build("two-heads"))


def test_other_heads_need_a_scale_shift_template():
    """A model with a head added to a plain-MACE template's (mace-torch's ``extract_config_mace_model``
    cannot rebuild a MACE) is refused, naming both head lists and the class."""
    base = converted("mace-soft-float32")
    model = ModelBundle(*base.config.with_head(base.variables, "new", copy_from=0))
    message = r"heads \['Default', 'new'\] differ from the template's \['Default'\].*not a MACE"
    with pytest.raises(ValueError, match=message):
        with_weights(model, build("mace-soft-float32"))


def test_unmerged_adapter_is_refused():
    bundle = converted("mp0a-large")
    params = {**bundle.variables["params"], "lora": {"a": np.zeros((8, 2))}}
    with pytest.raises(ValueError, match=r"no place in the template .*'lora\.a'"):
        with_weights(ModelBundle(bundle.config, {**bundle.variables, "params": params}), build("mp0a-large"))


def test_cli_export_loads_in_a_fresh_mace_process(tmp_path):
    """``equitrain-jax export DIR --template FILE -o OUT`` on a perturbed ZBL/density model; a new
    process loads OUT with torch.load and with MACECalculator(model_paths=...) and gets the JAX
    energies and forces on every test structure (stress on the periodic one)."""
    torch.save(build("mp0b3"), tmp_path / "base.model")
    enable_float64()
    model = perturbed(converted("mp0b3"), seed=9)
    save_model(tmp_path / "finetuned", model.config, model.variables)
    parser = argparse.ArgumentParser()
    export_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["export", str(tmp_path / "finetuned"), "--template", str(tmp_path / "base.model"), "-o", str(tmp_path / "out.model")]
    )
    args.func(args)

    code = (
        "import json, sys, torch\n"
        "from common import structures\n"
        "torch.set_default_dtype(torch.float64)  # as common.torch_reference and mace-torch's scripts\n"
        "module = torch.load(sys.argv[1], weights_only=False)\n"
        "assert type(module).__name__ == 'ScaleShiftMACE', type(module)\n"
        "from mace.calculators import MACECalculator\n"
        "calc = MACECalculator(model_paths=sys.argv[1], default_dtype='float64', device='cpu')\n"
        "results = []\n"
        "for atoms in structures().values():\n"
        "    atoms.calc = calc\n"
        "    results.append(dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces().tolist(),\n"
        "                        stress=atoms.get_stress(voigt=False).tolist() if atoms.pbc.all() else None))\n"
        "print(json.dumps(results))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out.model")],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1],
    )
    reference = json.loads(run.stdout.strip().splitlines()[-1])
    ours = Potential(tmp_path / "finetuned", dtype="float64").evaluate(list(structures().values()))
    assert sum(r["stress"] is not None for r in reference) == 1
    for mine, ref in zip(ours, reference):
        assert abs(mine["energy"] - ref["energy"]) < TOL64
        np.testing.assert_allclose(mine["forces"], ref["forces"], rtol=0, atol=TOL64)
        if ref["stress"] is not None:
            np.testing.assert_allclose(mine["stress"], ref["stress"], rtol=0, atol=TOL64)


@pytest.mark.slow
def test_cuequivariance_template_exports_in_e3nn_layout(tmp_path):
    """A cuEquivariance template file: the export is the e3nn-layout module carrying the JAX
    weights, bit for bit (slow: building and unpickling cuEquivariance modules takes minutes)."""
    pytest.importorskip("cuequivariance_torch")
    from mace.cli.convert_e3nn_cueq import run as e3nn_to_cueq

    source = build("mp0b3")
    previous = torch.get_default_dtype()
    try:
        cueq_template = e3nn_to_cueq(rerandomised(source, seed=14), return_model=True, device="cpu")
    finally:
        torch.set_default_dtype(previous)
    torch.save(cueq_template, tmp_path / "cueq.model")
    path = export_to_mace_torch(converted("mp0b3"), tmp_path / "cueq.model", tmp_path / "out.model")
    exported = torch.load(path, weights_only=False)
    assert not any("cuequivariance" in type(m).__module__ for m in exported.modules())
    for name, tensor in source.state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name


# every family the converter maps (MACE-OMOL-0 is refused), 4 channels with the reduced
# symmetric-contraction basis (the same functions; mace-torch builds them in seconds)
EXPORTED_FAMILIES = sorted(set(ARCHITECTURES) - {"omol0"})


def with_added_head(architecture, seed: int) -> tuple[ModelBundle, object]:
    """A converted 4-channel model with one head more than its mace-torch template (as a multi-head
    fine-tune makes), every weight, E0, scale and shift perturbed; and the template."""
    template = build_mace_torch(architecture, atomic_numbers=ELEMENTS, channels=4, seed=seed)
    base = ModelBundle(*convert_model(template))
    config, variables = base.config.with_head(base.variables, "new", copy_from=len(base.config.heads) - 1)
    return perturbed(ModelBundle(config, variables), seed=seed), template


def check_added_head_export(architecture, path: Path, atoms, seed: int, first_head: bool = True) -> ModelBundle:
    """Export a model with an added head: a ScaleShiftMACE with the model's heads whose new head
    (and first head, if ``first_head``) gives the JAX numbers in mace-torch's calculator."""
    enable_float64()
    model, template = with_added_head(architecture, seed)
    export_to_mace_torch(model, template, path)
    exported = torch.load(path, map_location="cpu", weights_only=False)
    assert type(exported).__name__ == "ScaleShiftMACE" and list(exported.heads) == list(model.config.heads)
    assert len(exported.heads) == len(template.heads) + 1
    for head in ("new", model.config.heads[0])[: 2 if first_head else 1]:
        reference = torch_reference(exported, atoms, head=head)
        assert_parity(Potential(model, dtype="float64", head=head).evaluate(atoms), reference, TOL64)
    return model


def test_mh1_with_an_added_head_exports_with_parity(tmp_path):
    """MACE-MH-1 (six heads, non-linear blocks) plus a seventh head, on the triclinic crystal."""
    check_added_head_export(
        dataclasses.replace(ARCHITECTURES["mh1"], use_reduced_cg=True), tmp_path / "added.model",
        [structures()["triclinic"]], seed=21, first_head=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", EXPORTED_FAMILIES)
def test_family_with_an_added_head_exports_with_parity(family, tmp_path):
    """Each family plus one head, on the triclinic crystal and the molecule."""
    check_added_head_export(
        dataclasses.replace(ARCHITECTURES[family], use_reduced_cg=True), tmp_path / "added.model",
        [structures()["triclinic"], structures()["molecule"]], seed=22,
    )


@pytest.mark.slow
@pytest.mark.parametrize("family, lammps_format", [("mp0b3", "libtorch"), ("mh1", "mliap")])
def test_added_head_export_compiles_for_lammps(family, lammps_format, tmp_path):
    """``python -m mace.cli.create_lammps_model`` accepts an export with an added head and selects
    it.  MH-1 goes to the ML-IAP format: mace-torch 0.3.16 cannot TorchScript its own non-linear
    block's gate for the libtorch format, on any MH-1 model (ACEsuit/mace#1713)."""
    path = tmp_path / "added.model"
    model = check_added_head_export(
        dataclasses.replace(ARCHITECTURES[family], use_reduced_cg=True), path, [structures()["triclinic"]], seed=23,
        first_head=False,
    )
    run = subprocess.run(
        [sys.executable, "-m", "mace.cli.create_lammps_model", str(path), "--head", "new", "--format", lammps_format],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Selected head: new" in run.stdout
    if lammps_format == "libtorch":
        lammps = torch.jit.load(str(path) + "-lammps.pt")
        assert int(lammps.head[0]) == model.config.heads.index("new")
    else:
        lammps = torch.load(str(path) + "-mliap_lammps.pt", weights_only=False)
        assert int(lammps.model.head[0]) == model.config.heads.index("new")
        assert list(lammps.model.model.heads) == list(model.config.heads)
