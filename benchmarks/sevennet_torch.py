"""Torch side of the SevenNet-0 rows of ``benchmarks/inference.py``: sevenn's own model and ASE
calculator on the structure in an extxyz file, float32 (as sevenn runs).  Runs in the sevenn
environment (sevenn needs e3nn >= 0.5, which clashes with mace-torch), which inference.py calls:

    .venv-sevenn/bin/python benchmarks/sevennet_torch.py structure.xyz --repeats 5

Prints one JSON line: model_s (the model on a prebuilt graph: energy, forces and stress, which the
sevenn model always computes) and calc_s (``get_forces()`` of ``SevenNetCalculator`` on a freshly
rattled structure, neighbour list included); medians of --repeats calls after three warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import warnings

import ase.io
import torch
from timing import median_time  # benchmarks/timing.py, beside this script

WARMUP = 3  # TorchScript/e3nn code optimises itself over the first calls



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structure")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import sevenn
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.calculator import SevenNetCalculator
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    atoms = ase.io.read(args.structure)
    calc = SevenNetCalculator("7net-0", device="cpu")
    graph = unlabeled_atoms_to_graph(atoms, calc.cutoff)

    def model():
        return calc.model(AtomGraphData.from_numpy_dict(graph))

    for _ in range(WARMUP):
        model()
    model_s = median_time(model, args.repeats)

    atoms.calc = calc
    for _ in range(WARMUP):
        atoms.rattle(1e-4)
        atoms.get_forces()

    def calculator():
        atoms.rattle(1e-4)
        atoms.get_forces()

    calc_s = median_time(calculator, args.repeats)
    print(json.dumps(dict(model_s=model_s, calc_s=calc_s, sevenn=sevenn.__version__, torch=torch.__version__,
                          threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
