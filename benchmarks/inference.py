"""Energy+forces time of mace-torch vs equitrain-jax on the same weights, in one run.

MACE-MP-0 medium architecture (128x0e+128x1o, 89 elements, random weights), diamond-Si
supercells.  Two levels:
  model       the model alone on a prebuilt graph (mace-torch: its batch dict; JAX: padded graph on
              device), energy and forces, median of --repeats calls after warm-up;
  calculator  each ASE calculator's get_forces() on a fresh structure (neighbour list, data
              handling and host-device traffic included).
Compile time (first JAX call) is reported separately.  Prints a table and the ratio
torch time / JAX time (above 1: JAX is faster).

    python benchmarks/inference.py --sizes 64 512 --dtypes float32 float64
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time

import mace  # noqa: F401  (before e3nn)
import numpy as np
import torch
from ase.build import bulk

import jax
import jax.numpy as jnp

from equitrain_jax.calculator import Calculator
from equitrain_jax.convert import convert_model
from equitrain_jax.convert.architectures import build_mace_torch
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.models.mace import MACE
from equitrain_jax.models.quantities import node_graph_index
from equitrain_jax.potential import Potential, enable_float64

REPS = {64: (2, 2, 2), 216: (3, 3, 3), 512: (4, 4, 4), 1000: (5, 5, 5), 4096: (8, 8, 8)}


def silicon(n_atoms: int):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(REPS[n_atoms])
    atoms.rattle(0.02, seed=0)
    return atoms


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_model_level(module, atoms, dtype, repeats):
    from mace.calculators import MACECalculator

    torch.set_default_dtype(getattr(torch, dtype))
    calc = MACECalculator(models=module, default_dtype=dtype)
    batch = calc._atoms_to_batch(atoms)  # mace-torch's own graph, built once
    batch_dict = batch.to_dict()

    def run():
        data = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch_dict.items()}
        out = module(data, compute_stress=False, training=False)
        return out["forces"]

    run()
    return median_time(run, repeats), calc


def jax_model_level(potential, atoms, repeats):
    graph = potential.to_device(potential.graph(atoms))
    apply = functools.partial(potential.module.apply, method=MACE.node_energies)

    def energy_forces(variables, graph):
        def total(positions):
            g = graph._replace(nodes={**graph.nodes, "positions": positions})
            return jnp.sum(apply(variables, g))

        energy, grad = jax.value_and_grad(total)(graph.nodes["positions"])
        return energy, -grad

    fn = jax.jit(energy_forces)
    start = time.perf_counter()
    jax.block_until_ready(fn(potential.variables, graph))
    compile_time = time.perf_counter() - start

    def run():
        return jax.block_until_ready(fn(potential.variables, graph))

    return median_time(run, repeats), compile_time


def calculator_level(calc, atoms, repeats):
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()

    def run():
        atoms.rattle(1e-4)
        atoms.get_forces()

    return median_time(run, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512], choices=sorted(REPS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    enable_float64()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{jax.devices()[0].device_kind}, torch {torch.__version__}, jax {jax.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    rows = []
    for dtype in args.dtypes:
        module = build_mace_torch("mp0a-medium", atomic_numbers=tuple(range(1, 90)), channels=args.channels,
                                  dtype=dtype)
        bundle = ModelBundle(*convert_model(module))
        potential = Potential(bundle, dtype=dtype)
        for n in args.sizes:
            atoms = silicon(n)
            t_torch, torch_calc = torch_model_level(module, atoms, dtype, args.repeats)
            t_jax, compile_time = jax_model_level(potential, atoms, args.repeats)
            c_torch = calculator_level(torch_calc, atoms, args.repeats)
            c_jax = calculator_level(Calculator(potential), atoms, args.repeats)
            row = dict(dtype=dtype, atoms=n, torch_model_s=t_torch, jax_model_s=t_jax,
                       model_speedup=t_torch / t_jax, jax_compile_s=compile_time,
                       torch_calc_s=c_torch, jax_calc_s=c_jax, calc_speedup=c_torch / c_jax)
            rows.append(row)
            print(f"{dtype:8s} {n:5d} atoms | model: torch {t_torch*1e3:9.1f} ms  jax {t_jax*1e3:9.1f} ms  "
                  f"x{t_torch/t_jax:5.2f} (compile {compile_time:5.1f} s) | calculator: torch {c_torch*1e3:9.1f} ms  "
                  f"jax {c_jax*1e3:9.1f} ms  x{c_torch/c_jax:5.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
