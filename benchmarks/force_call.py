"""The unit of work of the many-materials comparison: one SevenNet-0 force call of torch-sim
against our force call and our exact Hessian-vector product, on the same supercell, one run.

`benchmarks/phonons_many.py` finds our batched list slower than torch-sim's finite displacements.
Per displacement, torch-sim pays one force call of the displaced supercell; we pay one
Hessian-vector product (forward over reverse) of the supercell padded as `--many` pads it.  This
script times those calls alone, in the same run, so the ratio can be read without the rest of the
workflow:

- ours: energy+forces and one HVP, the supercell padded to `--many`'s shape (atoms to a power of
  two, neighbour slots to `equitrain_jax.phonons.many.neighbour_slots`), and again with the
  neighbour slots at the supercell's own in-degree (the cost of the padding);
- torch-sim: `torch_sim.models.sevennet.SevenNetModel` on the same file's weights, forces of the
  same supercell, in an environment with sevenn and torch-sim-atomistic (``--torch-python``).

With ``--plan-count N`` it also counts, for the first N crystals of `phonons_many.py`'s list, how
much of the batched list's work is padding: real edges × displacements against padded atoms ×
neighbour slots × tangents over all batches, with `--many`'s buckets (powers of two) and with
finer ones (`equitrain_jax.data.bucket_size`, 4 per octave, for atoms and slots), and how many
compiled (size, width, tangents) shapes each needs (no model evaluation: neighbour lists only).

float32 on both sides (torch-sim's SevenNetModel supports float32 only); medians of ``--repeats``
warm calls; one thread each when run with ``OMP_NUM_THREADS=1`` and XLA's intra-op parallelism 1:

    OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
      python benchmarks/force_call.py --torch-python PY
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import median_time  # noqa: E402

OUTPUT = Path(__file__).parent / "results" / "force_call.json"


def supercell(args):
    from ase.build import bulk

    return bulk(args.element, args.structure, a=args.a).repeat((args.repeat,) * 3)


def torch_side(args) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import sevenn.calculator
    import sevenn.util

    if not hasattr(sevenn.calculator, "torch_script_type"):  # torch-sim 0.3.0 with sevenn 0.13 (see phonons_many.py)
        sevenn.calculator.torch_script_type = torch.jit.RecursiveScriptModule
    import torch_sim as ts
    from torch_sim.models.sevennet import SevenNetModel

    module, _ = sevenn.util.model_from_checkpoint(args.checkpoint)
    model = SevenNetModel(model=module, device=torch.device("cpu"), dtype=torch.float32)
    state = ts.io.atoms_to_state([supercell(args)], torch.device("cpu"), torch.float32)
    model(state)
    return {"torch_sim_forces_s": median_time(lambda: model(state)["forces"], args.repeats)}


def jax_side(args) -> dict:
    import functools

    import jax
    import jax.numpy as jnp

    from equitrain_jax.convert.sevennet import convert_pretrained
    from equitrain_jax.data import PaddedShape, bucket_size, in_degree
    from equitrain_jax.models.quantities import hessian_vector_product
    from equitrain_jax.phonons.many import neighbour_slots, padded_atoms
    from equitrain_jax.potential import Potential

    model_dir = args.model_dir
    if not (model_dir / "config.json").is_file():
        convert_pretrained("sevennet-0", model_dir)
    potential = Potential(model_dir, dtype="float32")
    atoms = supercell(args)
    graph = potential.graph(atoms)
    degree = in_degree(graph)
    hvp = jax.jit(functools.partial(hessian_vector_product, potential.node_energy_fn))
    row = {"atoms": len(atoms), "edges": int(len(graph.senders)), "in_degree": degree}
    for name, slots in (("many", neighbour_slots(degree)), ("own", bucket_size(degree, minimum=4))):
        shape = PaddedShape(padded_atoms(len(atoms), 256), slots, 2)
        device_graph = potential.device_graph(graph, shape)
        positions = device_graph.nodes["positions"]
        tangent = jnp.zeros_like(positions).at[0, 0].set(0.01)
        forces = lambda: jax.block_until_ready(potential._outputs(potential.variables, device_graph))  # noqa: E731
        product = lambda: jax.block_until_ready(hvp(potential.variables, device_graph, positions, tangent))  # noqa: E731
        forces(), product()  # compile
        row[name] = {"padded_atoms": shape.n_node, "neighbour_slots": slots,
                     "edge_fill": len(graph.senders) / (shape.n_node * slots),
                     "forces_s": median_time(forces, args.repeats), "hvp_s": median_time(product, args.repeats)}
    row["versions"] = {"jax": jax.__version__}
    return row


def padding(count: int, model_dir: Path, min_length: float = 10.0, batch_atoms: int = 256) -> dict:
    """Work of the batched plan of the first ``count`` crystals (see the module): real and padded
    edge slots × tangents, batches and compiled shapes, for `--many`'s buckets and finer ones."""
    import warnings

    import numpy as np

    from equitrain_jax.data import bucket_size, in_degree
    from equitrain_jax.phonons.bridge import new_phonopy, phonopy_to_ase, supercell_for_min_length
    from equitrain_jax.phonons.many import neighbour_slots, padded_atoms, plan_batches
    from equitrain_jax.potential import Potential
    from phonons_many import crystals

    potential = Potential(model_dir, dtype="float32")
    sizes, counts, edges, degrees = [], [], [], []
    for atoms in crystals()[:count]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            phonon = new_phonopy(atoms, np.diag(supercell_for_min_length(atoms.cell.array, min_length)), "auto", 1e-5)
        phonon.generate_displacements(distance=0.01, is_plusminus=False)
        graph = potential.graph(phonopy_to_ase(phonon.supercell))
        sizes.append(len(phonon.supercell))
        counts.append(len(phonon.dataset["first_atoms"]))
        edges.append(len(graph.senders))
        degrees.append(in_degree(graph))
    real = sum(e * k for e, k in zip(edges, counts))
    plans = {"many (powers of two)": (neighbour_slots, padded_atoms),
             "finer (4 per octave)": (lambda d: bucket_size(d, minimum=16), lambda n, _: bucket_size(n, minimum=16))}
    rows = {}
    for name, (slot_of, atoms_of) in plans.items():
        plan = plan_batches(sizes, counts, [slot_of(d) for d in degrees], batch_atoms, padded=atoms_of)
        work = sum(n * width * chunk * -(-max(counts[i] for i in batch) // chunk)  # chunk-sized calls of padded tangents
                   for batch, n, width, chunk in plan)
        rows[name] = {"edge_slots_x_tangents": work, "fill": real / work, "batches": len(plan),
                      "shapes": len({shape for _, *shape in plan})}
    return {"crystals": count, "real_edges_x_displacements": real, "plans": rows}


def print_padding(padding: dict) -> None:
    print(f"the batched plan of the first {padding['crystals']} crystals: "
          f"{padding['real_edges_x_displacements'] / 1e6:.2f} M real edges x displacements")
    for name, plan in padding["plans"].items():
        print(f"  {name}: {plan['edge_slots_x_tangents'] / 1e6:.2f} M edge slots x tangents (fill {plan['fill']:.2f}), "
              f"{plan['batches']} batches, {plan['shapes']} compiled (size, width, chunk) shapes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", default=sys.executable,
                        help="Python of torch-sim's side (an environment with sevenn and torch-sim-atomistic)")
    parser.add_argument("--element", default="Cu")
    parser.add_argument("--structure", default="fcc")
    parser.add_argument("--a", type=float, default=3.61, help="lattice constant, Å")
    parser.add_argument("--repeat", type=int, default=5, help="supercell of the primitive cell, n×n×n (default 5: 125 Cu atoms)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per side (median)")
    parser.add_argument("--model-dir", type=Path, default=Path(__file__).parent / "results" / "phonons_many" / "sevennet0" / "model")
    parser.add_argument("--side", choices=("torch",), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plan-count", type=int, default=0, help="also the padding of the first N crystals' batched plan")
    parser.add_argument("--plan-only", action="store_true", help="only the padding (--plan-count), kept beside the "
                                                                  "timings already in --output")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.side == "torch":
        print(json.dumps(torch_side(args)))
        return
    if args.plan_only:
        row = json.loads(args.output.read_text()) if args.output.is_file() else {}
        row["padding"] = padding(args.plan_count, args.model_dir)
        print_padding(row["padding"])
        args.output.write_text(json.dumps(row, indent=1) + "\n")
        return
    from equitrain_jax.convert.sevennet import pretrained_checkpoint

    command = [args.torch_python, __file__, "--side", "torch", "--checkpoint", str(pretrained_checkpoint("sevennet-0")),
               "--element", args.element, "--structure", args.structure, "--a", str(args.a),
               "--repeat", str(args.repeat), "--repeats", str(args.repeats)]
    torch_row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    row = {"machine": platform.machine(), "threads": os.environ.get("OMP_NUM_THREADS"), "loadavg": os.getloadavg()[0],
           "supercell": f"{args.element} {args.structure} a={args.a} x{args.repeat}", **jax_side(args), **torch_row}
    reference = row["torch_sim_forces_s"]
    print(f"SevenNet-0 float32, {row['atoms']} atoms ({row['supercell']}), in-degree {row['in_degree']}, "
          f"median of {args.repeats}; torch-sim forces {reference:.3f} s")
    for name in ("many", "own"):
        r = row[name]
        print(f"  ours, {r['padded_atoms']} atoms x {r['neighbour_slots']} slots (fill {r['edge_fill']:.2f}): "
              f"forces {r['forces_s']:.3f} s ({reference / r['forces_s']:.2f}x torch-sim), "
              f"HVP {r['hvp_s']:.3f} s ({reference / r['hvp_s']:.2f}x torch-sim's force call, "
              f"{r['hvp_s'] / r['forces_s']:.2f} of our force calls)")
    if args.plan_count:
        row["padding"] = padding(args.plan_count, args.model_dir)
        print_padding(row["padding"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
