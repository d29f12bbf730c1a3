"""Reference energies, forces and stress of SevenNet-0 from sevenn itself, for the parity tests.

sevenn needs e3nn >= 0.5, which clashes with mace-torch's e3nn 0.4.4, so this script runs in its own
environment.  To regenerate ``tests/fixtures/sevennet/reference.json``::

    python3 -m venv .venv-sevenn
    .venv-sevenn/bin/pip install torch==2.13.0 sevenn==0.13.0
    .venv-sevenn/bin/python scripts/sevennet_reference.py

It evaluates the SevenNet-0 (11Jul2024) checkpoint shipped inside the sevenn package with sevenn's
own ASE calculator (`SevenNetCalculator`, sevenn's own neighbour list), in float32 as sevenn runs it,
and in float64 (the same patched weights loaded into a model built with float64 as torch's default
dtype, with the Clebsch–Gordan constants the checkpoint stores in float32 recomputed by e3nn in
float64).  Structures: a rattled triclinic cell with four elements, a molecule, and a batch of four
further structures (crystals and a molecule).  The JSON holds the structures, the numbers (energy eV,
per-atom energies eV, forces eV/Å, ASE stress eV/Å³ in Voigt order), the checkpoint's SHA-256 and
the sevenn/torch/e3nn/ase versions used.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import ase
import numpy as np
from ase.build import bulk, molecule

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sevennet" / "reference.json"
MODEL_NAME = "7net-0"


def triclinic_crystal() -> ase.Atoms:
    """Rocksalt MgO 2x2x1 supercell, four elements, sheared into a triclinic cell and rattled."""
    atoms = bulk("MgO", "rocksalt", a=4.21, cubic=True) * (2, 1, 1)
    numbers = atoms.get_atomic_numbers()
    numbers[[0, 5]] = [28, 9]  # Mg → Ni, O → F
    atoms.set_atomic_numbers(numbers)
    shear = np.array([[1.0, 0.04, -0.03], [0.02, 0.97, 0.05], [-0.04, 0.03, 1.02]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.08, seed=3)
    return atoms


def ethanol() -> ase.Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.03, seed=4)
    return atoms


def batch() -> list[ase.Atoms]:
    """Four structures of different sizes and kinds for batched evaluation."""
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.05, seed=5)
    cu = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    cu.set_cell(cu.cell.array @ np.diag([1.02, 0.99, 1.0]) + 0.05 * np.eye(3)[::-1], scale_atoms=True)
    cu.rattle(0.04, seed=6)
    lif = bulk("LiF", "rocksalt", a=4.03)
    lif.rattle(0.05, seed=7)
    water = molecule("H2O")
    water.rattle(0.02, seed=8)
    return [si, cu, lif, water]


def structure_record(atoms: ase.Atoms) -> dict:
    return {
        "numbers": atoms.get_atomic_numbers().tolist(),
        "positions": atoms.get_positions().tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }


def results(atoms: ase.Atoms, calculator) -> dict:
    atoms = atoms.copy()
    atoms.calc = calculator
    out = {
        "energy": float(atoms.get_potential_energy()),
        "energies": np.asarray(calculator.results["energies"], float).tolist(),
        "forces": atoms.get_forces().tolist(),
    }
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress().tolist()
    return out


def float64_calculator(float32_calculator):
    """The same model in float64: sevenn's patched state dict in a float64-built model, its
    Clebsch–Gordan constants recomputed by e3nn in float64, fed float64 edge vectors and one-hot
    species (`SevenNetCalculator` casts its inputs to float32)."""
    import torch
    from ase.calculators.calculator import Calculator, all_changes
    from e3nn.o3 import wigner_3j
    from sevenn import _keys as KEY
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.calculator import SevenNetCalculator
    from sevenn.model_build import build_E3_equivariant_model
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    class Float64SevenNetCalculator(SevenNetCalculator):
        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            Calculator.calculate(self, atoms, properties, system_changes)
            graph = unlabeled_atoms_to_graph(atoms, self.cutoff)
            # copied first: from_numpy_dict casts the dict's own entries to float32 in place
            exact = {key: torch.tensor(np.asarray(graph[key]), dtype=torch.float64)
                     for key in (KEY.POS, KEY.EDGE_VEC, KEY.CELL_VOLUME)}
            data = AtomGraphData.from_numpy_dict(graph)
            for key, value in exact.items():
                data[key] = value
            self.results = self.output_to_results(self.model(data))

    state = float32_calculator.model.state_dict()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    model = build_E3_equivariant_model(dict(float32_calculator.sevennet_config))
    model.load_state_dict(state, strict=True)
    model = model.double()
    model.set_is_batch_data(False)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            match = re.search(r"_w3j_(\d+)_(\d+)_(\d+)$", name)
            if match:  # the checkpoint stores its Clebsch–Gordan constants in float32
                exact = wigner_3j(*(int(l) for l in match.groups()), dtype=torch.float64)
                sign = 1.0 if torch.allclose(buffer, exact, atol=1e-6) else -1.0
                assert torch.allclose(buffer, sign * exact, atol=1e-6), name
                buffer.copy_(sign * exact)

    def one_hot_to_float64(module, inputs):  # sevenn's one-hot embedding is hard-coded float32
        (data,) = inputs
        data[KEY.NODE_FEATURE] = data[KEY.NODE_FEATURE].double()
        return (data,)

    model._modules["onehot_to_feature_x"].register_forward_pre_hook(one_hot_to_float64)
    return Float64SevenNetCalculator(model, file_type="model_instance", device="cpu"), previous


def main() -> None:
    import e3nn
    import sevenn
    import torch
    from sevenn.calculator import SevenNetCalculator
    from sevenn.util import pretrained_name_to_path

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    checkpoint = Path(pretrained_name_to_path(MODEL_NAME))
    structures = {"crystal": [triclinic_crystal()], "molecule": [ethanol()], "batch": batch()}

    calc32 = SevenNetCalculator(MODEL_NAME, device="cpu")
    numbers = {"float32": {}, "float64": {}}
    for name, group in structures.items():
        numbers["float32"][name] = [results(a, calc32) for a in group]
    calc64, previous = float64_calculator(calc32)
    try:
        for name, group in structures.items():
            numbers["float64"][name] = [results(a, calc64) for a in group]
    finally:
        torch.set_default_dtype(previous)

    data = {
        "model": MODEL_NAME,
        "checkpoint": f"sevenn/{checkpoint.parent.name}/{checkpoint.name}",
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "versions": {
            "sevenn": sevenn.__version__,
            "torch": torch.__version__,
            "e3nn": e3nn.__version__,
            "ase": ase.__version__,
        },
        "units": {"energy": "eV", "energies": "eV", "forces": "eV/Å", "stress": "eV/Å³ (ASE Voigt xx yy zz yz xz xy)"},
        "structures": {name: [structure_record(a) for a in group] for name, group in structures.items()},
        "results": numbers,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(data, indent=1) + "\n")
    for dtype, by_name in numbers.items():
        for name, outs in by_name.items():
            print(dtype, name, [round(o["energy"], 6) for o in outs])
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
