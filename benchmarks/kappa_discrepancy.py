"""Why SevenNet-0's finite-difference κ of Si disagrees with its exact κ: element-wise fc3, float64.

SevenNet-0 in float64 (``Potential(model, dtype="float64")``, finite differences through the same model).
For the first displacement of phono3py's data set (atom i, unit direction u) and one atom j of every neighbour
shell of i up to ``--max-shell`` Å, every direction β, the fc3 slice Φ[iu, jβ, k·] for all k (eV/Å³) by

  exact           ∂³E[u_i, e_jβ, ·]: one nested jvp (the feature's route)
  hessian-h       central differences of the exact Hessian, (H(r + h u_i) − H(r − h u_i))·e_jβ / 2h,
                  neighbour list rebuilt: checks the exact route on SevenNet-0 itself (error O(h²) where smooth)
  central-h       central differences of forces in both displacements (± of both, as phono3py's
                  ``--pm``): −[F(+h,+h) − F(+h,−h) − F(−h,+h) + F(−h,−h)] / 4h², error O(h²) where smooth
  forward-h       one-sided in both: −[F(+h,+h) − F(+h,0) − F(0,+h) + F(0,0)] / h², error O(h), the order
                  of phono3py's default data set for Si (u₁ and u₂ only, no −u)
  phono3py-h      phono3py's own fc3 (its default data set at distance h, its fit) through the same
                  model, the slice fc3[i, j, :, ·, β, :] contracted with u (``--phono3py-distances``)

Errors are reported per shell of j (its distance from i), with the distance of that shell from SevenNet-0's
r_on = 4.5 Å, where the second derivative of its XPLOR cutoff jumps (third derivative undefined): a finite
difference of step h crosses it when an edge length can change by more than its distance to r_on.

Also (``--kappa-lattice``): the exact κ(300 K) of Si in the 16-atom cell for lattice constants just below and
above a_c = 4·4.5/√11 = 5.4272 Å, where Si's third neighbours cross r_on: does the model's κ jump there?

Cells: ``example`` (phono3py's Si-PBE example, 64 atoms, a = 5.46626 Å: third neighbours at 4.532 Å) and
``small`` (2×2×2 primitive supercell, 16 atoms, a = 5.431 Å: third neighbours at 4.503 Å, as
benchmarks/conductivity.py).  Results merged into benchmarks/results/kappa_discrepancy.json per stage
(rerunning skips finished stages).

    python benchmarks/kappa_discrepancy.py --model SEVENNET0_DIR --cell small
    python benchmarks/kappa_discrepancy.py --model SEVENNET0_DIR --cell example --phono3py-distances 0.03 0.01 0.005
    python benchmarks/kappa_discrepancy.py --model SEVENNET0_DIR --kappa-lattice 5.420 5.426 5.428 5.431
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
EXAMPLE = HERE / "data" / "Si-PBE-phono3py"
RESULTS = HERE / "results" / "kappa_discrepancy.json"
R_ON = 4.5
HESSIAN_STEPS = (1e-3, 1e-4)
FORCE_STEPS = (0.03, 0.01, 0.003)


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save(key: str, value: dict) -> None:
    """Write one part (a cell, or the lattice scan) into the results file, keeping the others (parts run
    as separate processes)."""
    results = load()
    results[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))


def cell_and_dataset(name: str, distance: float = 0.03, is_plusminus="auto"):
    """(phono3py object with its default data set, supercell as ase.Atoms)."""
    import ase.io
    from ase.build import bulk

    from equitrain_jax.phonons.bridge import phonopy_to_ase
    from equitrain_jax.phonons.conductivity import phono3py_with_displacements

    if name == "example":
        unitcell, repeat = ase.io.read(EXAMPLE / "POSCAR-unitcell", format="vasp"), 2
    else:
        unitcell, repeat = bulk("Si", "diamond", a=5.431), 2
    ph3 = phono3py_with_displacements(unitcell, repeat, distance=distance, is_plusminus=is_plusminus)
    return ph3, phonopy_to_ase(ph3.supercell)


def shells(atoms, i: int, max_distance: float) -> list[tuple[int, float]]:
    """One atom per neighbour shell of atom i (minimum-image distance, Å), nearest first (i itself first)."""
    distances = atoms.get_distances(i, range(len(atoms)), mic=True)
    found: dict[float, int] = {}
    for j in np.argsort(distances, kind="stable"):
        key = round(float(distances[j]), 3)
        if key <= max_distance and key not in found:
            found[key] = int(j)
    return [(j, d) for d, j in found.items()]


def unit(n: int, atom: int, direction: int) -> np.ndarray:
    e = np.zeros((n, 3))
    e[atom, direction] = 1.0
    return e


def forces_of(potential, atoms, displacements: list[np.ndarray]) -> np.ndarray:
    structures = []
    for u in displacements:
        moved = atoms.copy()
        moved.positions = atoms.positions + u
        structures.append(moved)
    return np.array([o["forces"] for o in potential.evaluate(structures, batch_size=8)])


def element_wise(model: str, name: str, max_shell: float, phono3py_distances: list[float], hessian_steps: list[float],
                 force_steps: list[float], with_exact: bool, results: dict) -> None:
    from equitrain_jax import Potential
    from equitrain_jax.phonons.conductivity import pair_displacements
    from equitrain_jax.phonons.hessian import hessian_vector_products
    from equitrain_jax.phonons.third_order import third_order_products

    potential = Potential(model, dtype="float64")
    ph3, atoms = cell_and_dataset(name)
    n = len(atoms)
    first = ph3.dataset["first_atoms"][0]
    i = int(first["number"])
    direction = np.asarray(first["displacement"], dtype=float) / np.linalg.norm(first["displacement"])
    chosen = shells(atoms, i, max_shell)
    pairs = [(j, beta) for j, _ in chosen for beta in range(3)]
    ui = np.zeros((n, 3))
    ui[i] = direction
    vs = np.array([unit(n, j, beta) for j, beta in pairs])
    store = results.setdefault(name, {})
    store.update(n_atoms=n, first_atom=i, direction=direction.tolist(),
                 shells=[dict(atom=j, distance_A=d) for j, d in chosen])
    arrays_path = RESULTS.with_name(f"kappa_discrepancy_{name}.npz")
    arrays = dict(np.load(arrays_path)) if arrays_path.exists() else {}

    def stage(key: str, compute) -> None:
        if key in arrays:
            return
        start = time.perf_counter()
        arrays[key] = compute()
        np.savez(arrays_path, **arrays)
        store.setdefault("seconds", {})[key] = time.perf_counter() - start
        print(name, key, f"{time.perf_counter() - start:.0f} s", flush=True)
        save(name, store)

    for h in hessian_steps:
        def hessian_difference(h=h):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions += h * ui
            minus.positions -= h * ui
            return (hessian_vector_products(potential, plus, vs) - hessian_vector_products(potential, minus, vs)) / (2 * h)
        stage(f"hessian-{h:g}", hessian_difference)
    for h in force_steps:
        def central(h=h):
            f = forces_of(potential, atoms, [s * h * ui + t * h * v for v in vs for s in (1, -1) for t in (1, -1)])
            f = f.reshape(len(vs), 4, n, 3)
            return -(f[:, 0] - f[:, 1] - f[:, 2] + f[:, 3]) / (4 * h * h)
        stage(f"central-{h:g}", central)

        def forward(h=h):
            f = forces_of(potential, atoms, [np.zeros((n, 3)), h * ui] + [h * v for v in vs] + [h * ui + h * v for v in vs])
            zero, first_only, second_only, both = f[0], f[1], f[2:2 + len(vs)], f[2 + len(vs):]
            return -(both - first_only[None] - second_only + zero[None]) / (h * h)
        stage(f"forward-{h:g}", forward)
    for d in phono3py_distances:
        def phono3py_fc3(d=d):
            fd, supercell = cell_and_dataset(name, distance=d)
            displaced = pair_displacements(fd.dataset, n)[0]
            fd.forces = forces_of(potential, supercell, list(displaced))
            fd.produce_fc3(is_compact_fc=True)
            p = int(np.where(fd.primitive.p2s_map == i)[0][0])
            return np.array([np.einsum("a,kac->kc", direction, fd.fc3[p, j, :, :, beta, :]) for j, beta in pairs])
        stage(f"phono3py-{d:g}", phono3py_fc3)

    if with_exact:
        stage("exact", lambda: third_order_products(potential, atoms, np.broadcast_to(ui, vs.shape), vs))

    # the reference: the exact slice, or (where it was not computed) the finest central difference of the
    # exact Hessian, which equals it to O(h²) (1.5e-6 eV/Å³ at h = 1e-4 Å in the 16-atom cell)
    reference = "exact" if "exact" in arrays else f"hessian-{min(hessian_steps):g}"
    exact = arrays[reference]
    store["reference"] = reference
    table = {}
    for key, value in arrays.items():
        if key == reference:
            continue
        rows = []
        for s, (j, d) in enumerate(chosen):
            block = slice(3 * s, 3 * s + 3)
            rows.append(dict(atom=j, distance_A=d, max_abs_exact_eV_per_A3=float(np.abs(exact[block]).max()),
                             max_abs_error_eV_per_A3=float(np.abs(value[block] - exact[block]).max())))
        table[key] = dict(max_abs_error_eV_per_A3=float(np.abs(value - exact).max()), per_shell=rows)
    store["max_abs_exact_eV_per_A3"] = float(np.abs(exact).max())
    store["errors"] = table
    store["date"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    save(name, store)


def kappa_lattice(model: str, lattices: list[float], results: dict) -> None:
    from ase.build import bulk

    from equitrain_jax import Potential
    from equitrain_jax.phonons.conductivity import kappa_summary, phono3py_from_potential, run_thermal_conductivity

    potential = Potential(model, dtype="float64")
    store = results.setdefault("kappa_lattice", {})
    for a in lattices:
        if f"{a:.4f}" in store:
            continue
        start = time.perf_counter()
        ph3 = phono3py_from_potential(potential, bulk("Si", "diamond", a=a), 2, symmetrize_fc=True, check_size=False)
        run_thermal_conductivity(ph3, (11, 11, 11), temperatures=[300.0])
        store[f"{a:.4f}"] = dict(a_A=a, third_neighbour_A=a * np.sqrt(11) / 4,
                                 kappa_xx_W_per_mK=float(kappa_summary(ph3)["kappa_W_per_mK"][0][0]),
                                 seconds=time.perf_counter() - start)
        print(store[f"{a:.4f}"], flush=True)
        save("kappa_lattice", store)


def plot(results: dict) -> None:
    """fc3 error against the step h, per method and neighbour shell of j, one panel per cell, and the exact κ
    against the lattice constant: benchmarks/results/kappa_discrepancy.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in ("small", "example") if "errors" in results.get(c, {})]
    scan = results.get("kappa_lattice", {})
    fig, axes = plt.subplots(1, len(cells) + bool(scan), figsize=(4.6 * (len(cells) + bool(scan)), 3.8), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        errors, shells_ = results[cell]["errors"], results[cell]["shells"]
        for method, marker in (("central", "o"), ("forward", "s"), ("phono3py", "^")):
            steps = sorted(float(k.split("-", 1)[1]) for k in errors if k.startswith(method + "-"))
            if not steps:
                continue
            for s, shell in enumerate(shells_):
                values = [errors[f"{method}-{h:g}"]["per_shell"][s]["max_abs_error_eV_per_A3"] for h in steps]
                ax.plot(steps, values, marker=marker, ms=3, color=f"C{s}", ls="-" if method == "central" else ":",
                        label=f"{method}, j at {shell['distance_A']:.3f} Å" if method != "forward" else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("displacement h (Å)")
        ax.set_ylabel("max |Φ_FD − Φ_exact| (eV/Å³)")
        ax.set_title(f"{cell}: {results[cell]['n_atoms']} atoms (max |Φ| {results[cell]['max_abs_exact_eV_per_A3']:.1f})",
                     fontsize=9)
        ax.legend(fontsize=5.5)
    if scan:
        ax = axes[0][-1]
        points = sorted((v["a_A"], v["kappa_xx_W_per_mK"]) for v in scan.values())
        ax.plot(*zip(*points), "o-")
        ax.axvline(4 * R_ON / np.sqrt(11), color="k", ls="--", lw=1)
        ax.set_xlabel("lattice constant a (Å); dashed: 3rd neighbours at r_on")
        ax.set_ylabel("exact κ(300 K) (W/(m·K))")
        ax.set_title("Si, 16 atoms, SevenNet-0, exact fc3", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS.with_suffix(".png"), dpi=150)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SevenNet-0 converted by equitrain-jax (a model directory)")
    parser.add_argument("--cell", choices=("example", "small"))
    parser.add_argument("--max-shell", type=float, default=6.0, help="shells of j up to this distance (Å)")
    parser.add_argument("--phono3py-distances", type=float, nargs="*", default=[])
    parser.add_argument("--hessian-steps", type=float, nargs="*", default=list(HESSIAN_STEPS), help="h (Å)")
    parser.add_argument("--no-exact", action="store_true",
                        help="skip the nested jvp (its compilation is the costliest step); compare with the finest "
                             "central difference of the exact Hessian instead")
    parser.add_argument("--force-steps", type=float, nargs="*", default=list(FORCE_STEPS), help="h (Å)")
    parser.add_argument("--plot", action="store_true", help="write benchmarks/results/kappa_discrepancy.png")
    parser.add_argument("--kappa-lattice", type=float, nargs="*", default=[], help="lattice constants (Å)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = load()
    if args.cell:
        element_wise(args.model, args.cell, args.max_shell, args.phono3py_distances, args.hessian_steps, args.force_steps,
                     not args.no_exact, results)
    if args.kappa_lattice:
        kappa_lattice(args.model, args.kappa_lattice, results)
    if args.plot:
        plot(load())
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
