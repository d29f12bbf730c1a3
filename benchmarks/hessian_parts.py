"""Where the Hessian term's cost comes from: the model's forces, one Hessian-vector product, and
the parameter gradients of a loss on each, on the same 64-atom diamond-C supercell, in one run.

    python benchmarks/hessian_parts.py                      # SevenNet-0 and MACE-MP-0 small (random weights)
    python benchmarks/hessian_parts.py --models mace-small --repeats 5

Per model (float32, the supercell of ``benchmarks/hessian_step.py``, one random direction v), the
median wall time of --repeats calls after a compiling one, of five jitted functions of the
variables:

- ``forces``: the energy's gradient with respect to the positions (reverse mode);
- ``hvp``: H·v, one `jax.jvp` of that gradient (forward over reverse);
- ``grad forces``: the parameter gradient of Σ F² (what an energy/force step differentiates);
- ``grad hvp``: the parameter gradient of Σ (H·v)² (one direction of the Hessian term);
- ``grad hvp, checkpointed``: the same with the product rematerialised (`jax.checkpoint`), as the
  default sequential Hessian term computes each direction.

Each is also given as a multiple of ``forces``.  Writes
``benchmarks/results/hessian_step/parts/results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from hessian_step import MODELS, OUTPUT, model_directory, phonon_item_64
from timing import median_time


def measure(name: str, repeats: int, scratch: Path) -> dict:
    import jax
    import jax.numpy as jnp

    from equitrain_jax.data import device_arrays, padded_device_graph
    from equitrain_jax.models.io import load_model
    from equitrain_jax.models.quantities import energy_gradient, hessian_vector_product, node_energy_function
    from equitrain_jax.train.phonon_data import phonon_graph

    bundle = load_model(model_directory(name, scratch))
    variables = device_arrays(bundle.variables, np.float32)
    graph = padded_device_graph(phonon_graph(phonon_item_64(), bundle.config.r_max, bundle.config.atomic_numbers),
                                np.float32)
    energy = node_energy_function(bundle.module(np.float32))
    positions = graph.nodes["positions"]
    real = graph.nodes["mask"][:, None]  # no tangent on padding atoms
    tangent = jnp.where(real, jax.random.normal(jax.random.PRNGKey(0), positions.shape, jnp.float32), 0.0)

    forces = lambda var: energy_gradient(energy, var, graph, positions)  # noqa: E731
    hvp = lambda var: hessian_vector_product(energy, var, graph, positions, tangent)  # noqa: E731

    def parameter_gradient(loss):
        gradient = jax.grad(lambda params, rest: loss({**rest, "params": params}))
        return lambda var: gradient(var["params"], {k: x for k, x in var.items() if k != "params"})

    functions = {
        "forces": forces,
        "hvp": hvp,
        "grad forces": parameter_gradient(lambda var: jnp.sum(forces(var) ** 2)),
        "grad hvp": parameter_gradient(lambda var: jnp.sum(hvp(var) ** 2)),
        "grad hvp, checkpointed": parameter_gradient(lambda var: jnp.sum(jax.checkpoint(hvp)(var) ** 2)),
    }
    row = {"model": name, "atoms": int(graph.n_node[0]), "padded_atoms": int(positions.shape[0]), "calls": {}}
    for label, function in functions.items():
        compiled = jax.jit(function)
        start = time.perf_counter()
        jax.block_until_ready(compiled(variables))
        first = time.perf_counter() - start
        seconds = median_time(lambda: jax.block_until_ready(compiled(variables)), repeats)
        row["calls"][label] = {"first_s": first, "median_s": seconds,
                               "x_forces": seconds / row["calls"]["forces"]["median_s"] if row["calls"] else 1.0}
        print(f"{name:<11} {label:<24} {seconds:8.3f} s  {row['calls'][label]['x_forces']:5.2f}x forces  "
              f"(first call {first:.1f} s)", flush=True)
    calls = row["calls"]
    row["grad_hvp_over_grad_forces"] = calls["grad hvp"]["median_s"] / calls["grad forces"]["median_s"]
    row["checkpointed_over_grad_forces"] = calls["grad hvp, checkpointed"]["median_s"] / calls["grad forces"]["median_s"]
    print(f"{name:<11} one direction's gradient / the forces' gradient: {row['grad_hvp_over_grad_forces']:.2f} "
          f"({row['checkpointed_over_grad_forces']:.2f} checkpointed)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT / "parts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(name, args.repeats, Path(scratch)) for name in args.models]
    args.output.mkdir(parents=True, exist_ok=True)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
              "threads": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "XLA_FLAGS")},
              "repeats": args.repeats, "rows": rows}
    (args.output / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.output / 'results.json'}")


if __name__ == "__main__":
    main()
