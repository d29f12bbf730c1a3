"""MACE inference and Hessian time with the e3nn backend against the cuequivariance backend, on the
same weights, in one run.

Model: the MACE-MP-0 medium architecture (128x0e+128x1o, 89 elements) with random weights from
mace-torch, converted once; both backends evaluate the same parameter tree.  cuequivariance runs
its CUDA kernel (``uniform_1d``) on a GPU and plain JAX (``naive``) elsewhere unless ``--method``
forces one.
  inference  energy and forces of the model on a prebuilt padded graph (diamond Si, --sizes atoms),
             median of --repeats calls after the compiling one; --dtype (float32 by default);
  hessian    the full Hessian (every row, forward-over-reverse) of Si16 / Si64, float64.
Each row reports both times, the ratio e3nn time / cuequivariance time (above 1: cuequivariance is
faster) and the largest difference between the backends' results.  Needs mace-torch (to build the
weights) and cuequivariance-jax.

    python benchmarks/cueq.py --sizes 64 512 4096 --hessian Si16 Si64 --json cueq.json
    python benchmarks/cueq.py --channels 4 --sizes 64 --hessian Si16 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import mace  # noqa: F401  (before e3nn)
import numpy as np
from ase.build import bulk

import jax

from equitrain_jax.convert import convert_model
from equitrain_jax.convert.architectures import build_mace_torch
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.models.mace import cueq
from equitrain_jax.phonons.hessian import hessian
from equitrain_jax.potential import Potential, enable_float64
from inference import jax_model_level, silicon  # benchmarks/inference.py, beside this script
from timing import median_time

BACKENDS = ("e3nn", "cuequivariance")
HESSIAN_CELLS = {"Si16": (2, 1, 1), "Si64": (2, 2, 2)}


def potential(bundle: ModelBundle, backend: str, dtype: str, method) -> Potential:
    config = bundle.config.with_backend(backend, method if backend == "cuequivariance" else None)
    return Potential(ModelBundle(config, bundle.variables), dtype=dtype)


def inference_rows(bundle, sizes, dtype, method, repeats) -> list[dict]:
    rows = []
    for n in sizes:
        atoms = silicon(n)
        row = {"benchmark": "inference", "atoms": n, "dtype": dtype}
        forces = {}
        for backend in BACKENDS:
            pot = potential(bundle, backend, dtype, method)
            row[f"{backend}_s"], row[f"{backend}_compile_s"] = jax_model_level(pot, atoms, repeats)
            forces[backend] = np.asarray(pot.evaluate([atoms])[0]["forces"])
        row["max_force_difference_eV_per_A"] = float(np.abs(forces["e3nn"] - forces["cuequivariance"]).max())
        rows.append(row)
        print_row(row)
    return rows


def hessian_rows(bundle, names, method, repeats) -> list[dict]:
    rows = []
    for name in names:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(HESSIAN_CELLS[name])
        atoms.rattle(0.02, seed=1)
        row = {"benchmark": "hessian", "atoms": len(atoms), "dtype": "float64"}
        matrices = {}
        for backend in BACKENDS:
            pot = potential(bundle, backend, "float64", method)
            start = time.perf_counter()
            matrices[backend] = hessian(pot, atoms)
            row[f"{backend}_compile_s"] = time.perf_counter() - start
            row[f"{backend}_s"] = median_time(lambda: hessian(pot, atoms), repeats)
        row["max_hessian_difference_eV_per_A2"] = float(np.abs(matrices["e3nn"] - matrices["cuequivariance"]).max())
        rows.append(row)
        print_row(row)
    return rows


def print_row(row: dict) -> None:
    ratio = row["e3nn_s"] / row["cuequivariance_s"]
    difference = {k: v for k, v in row.items() if k.startswith("max_")}
    print(f"{row['benchmark']:9s} {row['atoms']:5d} atoms {row['dtype']:7s}  e3nn {1e3 * row['e3nn_s']:9.2f} ms  "
          f"cuequivariance {1e3 * row['cuequivariance_s']:9.2f} ms  ratio {ratio:5.2f}  "
          + "  ".join(f"{k} {v:.2g}" for k, v in difference.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 512, 4096], help="inference cells (atoms)")
    parser.add_argument("--hessian", nargs="*", default=["Si16", "Si64"], choices=sorted(HESSIAN_CELLS))
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="of the inference")
    parser.add_argument("--method", choices=[m for m in cueq.METHODS], default=None,
                        help="cuequivariance method (default: uniform_1d on a GPU, naive elsewhere)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    enable_float64()
    module = build_mace_torch("mp0a-medium", channels=args.channels, seed=0)
    bundle = ModelBundle(*convert_model(module))
    method = args.method or cueq.default_method()
    header = {
        "machine": f"{platform.node()}, {jax.devices()[0].device_kind} ({jax.default_backend()})",
        "model": f"mp0a-medium architecture, {args.channels} channels, random weights",
        "cuequivariance_method": method,
        "repeats": args.repeats,
    }
    print(json.dumps(header))
    rows = []

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**header, "results": rows}, f, indent=1)

    for size in args.sizes:
        rows += inference_rows(bundle, [size], args.dtype, method, args.repeats)
        save()
    for name in args.hessian:
        rows += hessian_rows(bundle, [name], method, args.repeats)
        save()


if __name__ == "__main__":
    main()
