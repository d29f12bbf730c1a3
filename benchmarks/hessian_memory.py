"""Memory of a full Hessian against the chunk size: XLA's own accounting of the two compiled programs.

`equitrain_jax.phonons.hessian.hessian_vector_products` runs the primal once
(`compiled_linearization`: its output, the residuals R, stays alive for all chunks) and then one
compiled call per ``chunk_size`` tangents (`compiled_tangent_products`: working memory W(chunk)).
The peak of the Hessian is therefore about

    R + W(chunk) + inputs (weights, graph) + the rows gathered on the host (3N × 3N float64),

and W grows linearly with the chunk: W(chunk) ≈ W0 + chunk × w.  This script compiles both
programs (no timing) for diamond-Si supercells and a few chunk sizes and prints R, W(chunk) and the
fitted W0 and w from XLA's ``memory_analysis`` (output bytes of the linearisation, temporary bytes
of the tangent products), for the MACE-MP-0 medium architecture (random weights), float64.

    python benchmarks/hessian_memory.py                        # 16 and 64 atoms, 128 channels
    python benchmarks/hessian_memory.py --channels 16 --sizes 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform

import numpy as np

REPEATS = {16: (2, 1, 1), 64: (2, 2, 2), 128: (4, 2, 2), 216: (3, 3, 3)}


def measure(n_atoms: int, channels: int, chunks: list[int]) -> dict:
    import jax
    import jax.numpy as jnp
    import mace  # noqa: F401  (before e3nn)
    from ase.build import bulk

    from equitrain_jax.convert import convert_model
    from equitrain_jax.convert.architectures import build_mace_torch
    from equitrain_jax.models.io import ModelBundle
    from equitrain_jax.phonons.hessian import linearized_gradient, tangent_products
    from equitrain_jax.potential import Potential

    module = build_mace_torch("mp0a-medium", atomic_numbers=(14,), channels=channels, dtype="float64", seed=0)
    potential = Potential(ModelBundle(*convert_model(module)), dtype="float64")
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(REPEATS[n_atoms])
    graph = potential.device_graph(potential.graph(atoms))
    positions = graph.nodes["positions"]
    linearize = jax.jit(lambda v, g, r: linearized_gradient(potential.node_energy_fn, v, g, r))
    compiled = linearize.lower(potential.variables, graph, positions).compile()
    linear = compiled(potential.variables, graph, positions)
    residual_bytes = int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(linear)))
    primal = compiled.memory_analysis()
    row = dict(atoms=n_atoms, nodes=int(positions.shape[0]), edges=int(graph.senders.shape[0]),
               residual_bytes=residual_bytes, linearization_temp_bytes=int(primal.temp_size_in_bytes),
               argument_bytes=int(primal.argument_size_in_bytes), chunks={})
    for chunk in chunks:
        tangents = jnp.zeros((chunk,) + positions.shape, positions.dtype)
        analysis = jax.jit(tangent_products).lower(linear, tangents).compile().memory_analysis()
        row["chunks"][chunk] = int(analysis.temp_size_in_bytes)
    sizes = np.array(chunks, dtype=float)
    temps = np.array([row["chunks"][c] for c in chunks], dtype=float)
    slope, intercept = np.polyfit(sizes, temps, 1)
    row.update(per_tangent_bytes=float(slope), fixed_temp_bytes=float(intercept))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64], choices=sorted(REPEATS))
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 3, 12, 24])
    parser.add_argument("--save", default=None, help="write the rows as JSON to this file")
    args = parser.parse_args()
    header = (f"MACE-MP-0 medium architecture, {args.channels} channels, float64, diamond Si; "
              f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(header, flush=True)
    rows = []
    print(f"{'atoms':>5} {'edges':>6} {'R MB':>8} " + " ".join(f"{'W(' + str(c) + ') MB':>10}" for c in args.chunks)
          + f" {'w MB/tangent':>13} {'W0 MB':>7}")
    for n in args.sizes:
        row = measure(n, args.channels, args.chunks)
        rows.append(row)
        print(f"{n:5d} {row['edges']:6d} {row['residual_bytes'] / 1e6:8.1f} "
              + " ".join(f"{row['chunks'][c] / 1e6:10.1f}" for c in args.chunks)
              + f" {row['per_tangent_bytes'] / 1e6:13.1f} {row['fixed_temp_bytes'] / 1e6:7.1f}", flush=True)
        if args.save:  # after every size, so an interrupted run keeps what it measured
            with open(args.save, "w") as handle:
                json.dump(dict(header=header, channels=args.channels, rows=rows), handle, indent=1)
    print("R: residuals of the primal (output of the linearisation, kept for all chunks); W(c): XLA temporary bytes\n"
          "of one call with c tangents; w, W0: least-squares line W(c) ≈ W0 + c·w")


if __name__ == "__main__":
    main()
