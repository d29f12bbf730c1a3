"""Force constants for phonons: analytic JAX Hessians against mace-torch and finite displacements.

For one low-symmetry crystal (a random triclinic Si4O8 cell, P1, as a 2x1x1 supercell of 24
atoms; the 12-atom unit cell with --quick) and diamond-Si supercells of 64, 216 and 512 atoms
(and of 16, on request),
the same random-weight MACE-MP-0 medium architecture (mace-torch, converted to JAX) gives force
constants [N, N, 3, 3] in eV/Å² by

  (a) jax-full      our forward-over-reverse Hessian, every row           (phonons.force_constants, "full")
  (b) jax-sym       our Hessian rows of the symmetrically distinct atoms  (phonons.force_constants, "symmetry")
  (b') jax-disp     one Hessian-vector product per phonopy displacement, phonopy's solver
                    (phonons.force_constants, "displacements"; the default of phonopy_from_potential)
  (c) torch-hess    mace-torch's MACECalculator.get_hessian
  (d) torch-fd      phonopy finite displacements (0.01 Å, ± where phonopy needs them) with MACECalculator

Each (structure, method) runs in its own subprocess: wall time of the force-constant step (model
set-up excluded) and peak memory (ru_maxrss of that process, and its increase during the step).
The first call includes JAX's compilation; further calls are repeated up to --repeats calls or
--repeat-seconds, and their median is the "warm" time (for torch, which compiles nothing, the
median of all its calls).  Results are checked against (a): max |ΔΦ| in eV/Å².

A measurement whose time, extrapolated from the same method's last measurement (warm time per
Hessian row or force call and atom, times rows and atoms), exceeds --max-seconds is skipped and
its estimate printed.

    python benchmarks/hessian.py                 # 64, 216, 512 atoms and the low-symmetry crystal
    python benchmarks/hessian.py --channels 32   # a narrower model of the same architecture
    python benchmarks/hessian.py --quick         # the smallest run: the 12-atom cell and Si64, 16 channels
    python benchmarks/hessian.py --structures Si16,Si64 --methods jax-full,torch-hess   # full Hessians
    python benchmarks/hessian.py --structures Si16 --methods jax-full --chunk-size 3    # another chunk size
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

METHODS = ("jax-full", "jax-sym", "jax-disp", "torch-hess", "torch-fd")
JAX_KINDS = {"jax-full": "full", "jax-sym": "symmetry", "jax-disp": "displacements"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def unitcell_and_matrix(name: str):
    """(unit cell, supercell matrix) of a benchmark structure."""
    from ase import Atoms
    from ase.build import bulk

    if name == "Si16":
        return bulk("Si", "diamond", a=5.43, cubic=True), np.diag([2, 1, 1])
    if name in ("Si64", "Si216", "Si512"):
        n = int(name[2:])
        reps = {64: 2, 216: 3, 512: 4}[n]
        return bulk("Si", "diamond", a=5.43, cubic=True), reps * np.eye(3, dtype=int)
    if name.startswith("SiO-triclinic"):
        rng = np.random.default_rng(11)
        cell = np.array([[5.2, 0.0, 0.0], [1.1, 4.9, 0.0], [0.7, -0.9, 5.6]])
        positions = []
        while len(positions) < 12:
            trial = rng.uniform(size=3) @ cell
            test = Atoms("X" * (len(positions) + 1), positions=positions + [trial], cell=cell, pbc=True)
            if not positions or test.get_distances(len(positions), range(len(positions)), mic=True).min() > 1.5:
                positions.append(trial)
        numbers = [14] * 4 + [8] * 8
        matrix = np.eye(3, dtype=int) if name.endswith("-1") else np.diag([2, 1, 1])
        return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True), matrix
    raise ValueError(name)


def torch_model(channels: int):
    import mace  # noqa: F401
    from equitrain_jax.convert.architectures import build_mace_torch

    return build_mace_torch("mp0a-medium", atomic_numbers=(14, 8), channels=channels, seed=0)


def timed_calls(step, min_calls: int, max_calls: int, repeat_seconds: float) -> tuple[object, list[float]]:
    """Call ``step()`` ``min_calls`` times, then again while fewer than ``max_calls`` calls and the
    calls so far plus one more stay under ``repeat_seconds``; return the last result and every
    call's wall time (s)."""
    times: list[float] = []
    while True:
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
        if len(times) >= min_calls and (len(times) >= max_calls or sum(times) + times[-1] > repeat_seconds):
            return result, times


def work_units(method: str, structure: str) -> tuple[int, int, int]:
    """(atoms, Hessian rows or force calls, atoms × rows): what a method's time scales with."""
    warnings.simplefilter("ignore")
    from phonopy import Phonopy
    from phonopy.harmonic.displacement import get_least_displacements

    from equitrain_jax.phonons import ase_to_phonopy

    unitcell, matrix = unitcell_and_matrix(structure)
    phonon = Phonopy(ase_to_phonopy(unitcell), supercell_matrix=matrix, primitive_matrix=None)
    n = len(phonon.supercell)
    if method == "jax-sym":
        rows = 3 * len(phonon.symmetry.get_independent_atoms())
    elif method == "jax-disp":
        rows = len(get_least_displacements(phonon.symmetry, is_plusminus=False))
    elif method == "torch-fd":
        phonon.generate_displacements(distance=0.01)
        rows = len(phonon.supercells_with_displacements)
    else:
        rows = 3 * n
    return n, rows, n * rows


def device_peak_mb(method: str, device: str) -> float | None:
    """Peak accelerator memory of this process (MB) on CUDA: JAX's device statistics for our
    methods, torch's allocator for mace-torch's; None on CPU."""
    if device != "cuda":
        return None
    import torch

    if method.startswith("jax"):
        import jax

        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 1e6
    return torch.cuda.max_memory_allocated() / 1e6


def worker(method: str, structure: str, channels: int, out: str, repeats: int, repeat_seconds: float,
           chunk_size: int | None = None, device: str = "cpu") -> None:
    """Run one method on one structure; write {seconds, ...} JSON and the force constants."""
    warnings.simplefilter("ignore")
    import torch
    from phonopy import Phonopy

    from equitrain_jax.phonons import ase_to_phonopy, finite_displacement_force_constants, phonopy_to_ase

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may use (taskset)
    module = torch_model(channels)
    unitcell, matrix = unitcell_and_matrix(structure)
    phonon = Phonopy(ase_to_phonopy(unitcell), supercell_matrix=matrix, primitive_matrix=None)
    supercell = phonopy_to_ase(phonon.supercell)
    n = len(supercell)
    result: dict = dict(method=method, structure=structure, atoms=n)
    if method.startswith("jax"):
        from equitrain_jax.convert import convert_model
        from equitrain_jax.models.io import ModelBundle
        from equitrain_jax.phonons import force_constants
        from equitrain_jax.potential import Potential

        potential = Potential(ModelBundle(*convert_model(module)), dtype="float64")
        from equitrain_jax.phonons.hessian import default_chunk_size

        kind = JAX_KINDS[method]
        result["rows"] = work_units(method, structure)[1]
        result["chunk_size"] = chunk_size or default_chunk_size(n)
        base = peak_rss_mb()
        fc, times = timed_calls(  # the first call compiles: at least one warm call after it
            lambda: force_constants(potential, supercell, method=kind, symmetry=phonon.symmetry,
                                    primitive=phonon.primitive, chunk_size=chunk_size),
            2, max(repeats, 2), repeat_seconds,
        )
        result["seconds"] = times[0]
        if len(times) > 1:
            result["seconds_warm"] = statistics.median(times[1:])
    else:
        from mace.calculators import MACECalculator

        torch.set_default_dtype(torch.float64)
        calc = MACECalculator(models=module, default_dtype="float64", device=device)
        base = peak_rss_mb()

        def torch_hessian():
            calc.reset()
            hess = calc.get_hessian(supercell.copy())  # [3N, N, 3] = ∂²E/∂r∂r
            return np.transpose(np.asarray(hess).reshape(n, 3, n, 3), (0, 2, 1, 3))

        def torch_finite_displacements():
            calc.reset()  # an ASE calculator returns its stored forces for an unchanged structure: no cache hits
            return finite_displacement_force_constants(phonon, calc)  # phonopy default 0.01 Å, ± where needed

        if method == "torch-hess":
            result["rows"] = 3 * n
            fc, times = timed_calls(torch_hessian, 1, repeats, repeat_seconds)
        else:
            fc, times = timed_calls(torch_finite_displacements, 1, repeats, repeat_seconds)
            result["rows"] = f"{len(phonon.supercells_with_displacements)} force calls"
        result["seconds"] = times[0]
        result["seconds_warm"] = statistics.median(times)
    result["calls"] = len(times)
    result["peak_rss_mb"] = peak_rss_mb()
    result["delta_rss_mb"] = peak_rss_mb() - base
    result["device_peak_mb"] = device_peak_mb(method, device)
    np.save(out + ".npy", np.ascontiguousarray(fc))
    with open(out + ".json", "w") as handle:
        json.dump(result, handle)


def run(method: str, structure: str, args, tmp: str) -> dict:
    out = os.path.join(tmp, f"{structure}-{method}")
    command = [sys.executable, __file__, "--worker", method, structure, "--channels", str(args.channels),
               "--repeats", str(args.repeats), "--repeat-seconds", str(args.repeat_seconds), "--out", out,
               "--device", args.device]
    if args.chunk_size:
        command += ["--chunk-size", str(args.chunk_size)]
    try:
        subprocess.run(command, check=True, timeout=args.timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except subprocess.TimeoutExpired:
        return dict(method=method, structure=structure, error=f"timed out after {args.timeout:.0f} s")
    except subprocess.CalledProcessError as error:
        return dict(method=method, structure=structure, error=error.stderr.decode()[-300:])
    with open(out + ".json") as handle:
        result = json.load(handle)
    result["fc"] = np.load(out + ".npy")
    return result


def warm(result: dict) -> float:
    return result.get("seconds_warm", result["seconds"])


def table(results: list[dict]) -> str:
    lines = [
        f"{'structure':<17}{'N':>5} {'method':<11}{'rows/calls':>16}{'first s':>10}{'warm s':>9}{'calls':>6}"
        f"{'peak MB':>9}{'+MB':>8}{'max|ΔΦ| eV/Å²':>15}"
    ]
    for structure in dict.fromkeys(r["structure"] for r in results):
        group = [r for r in results if r["structure"] == structure]
        ref = next((r for r in group if r["method"] == "jax-full" and "fc" in r), None)
        for r in group:
            if "error" in r or "skipped" in r:
                message = r.get("skipped") or r["error"].strip().splitlines()[-1][:90]
                lines.append(f"{structure:<17}{r.get('atoms', ''):>5} {r['method']:<11}  {message}")
                continue
            diff = np.abs(r["fc"] - ref["fc"]).max() if ref is not None else float("nan")
            lines.append(
                f"{structure:<17}{r['atoms']:>5} {r['method']:<11}{str(r['rows']):>16}{r['seconds']:10.2f}"
                f"{warm(r):9.2f}{r['calls']:>6}{r['peak_rss_mb']:9.0f}{r['delta_rss_mb']:8.0f}{diff:15.2e}"
            )
    return "\n".join(lines)


RATIOS = (("torch-hess", "jax-full"), ("torch-hess", "jax-sym"), ("torch-hess", "jax-disp"),
          ("torch-fd", "jax-disp"), ("torch-fd", "jax-sym"), ("torch-fd", "jax-full"))


def ratios(results: list[dict]) -> tuple[str, list[dict]]:
    """Speed-ups (slower method's time / faster one's), warm medians and first calls, per structure."""
    lines, rows = [f"{'structure':<17}{'speed-up':<24}{'warm':>8}{'first call':>12}"], []
    for structure in dict.fromkeys(r["structure"] for r in results):
        measured = {r["method"]: r for r in results if r["structure"] == structure and "seconds" in r}
        for slow, fast in RATIOS:
            if slow in measured and fast in measured:
                row = dict(structure=structure, slow=slow, fast=fast,
                           warm=warm(measured[slow]) / warm(measured[fast]),
                           first=measured[slow]["seconds"] / measured[fast]["seconds"])
                rows.append(row)
                lines.append(f"{structure:<17}{slow + ' / ' + fast:<24}{row['warm']:8.1f}{row['first']:12.1f}")
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 atoms + the 12-atom low-symmetry cell, 16 channels")
    parser.add_argument("--structures", default=None,
                        help="comma-separated subset of Si16,Si64,Si216,Si512,SiO-triclinic,SiO-triclinic-1")
    parser.add_argument("--channels", type=int, default=None, help="model width (default 128; 16 with --quick)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3,
                        help="calls per measurement at most (median of the warm ones)")
    parser.add_argument("--repeat-seconds", type=float, default=60.0,
                        help="no further call once the calls took this long (s)")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="skip a measurement whose extrapolated time exceeds this (s)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per (structure, method)")
    parser.add_argument("--save", default=None, help="write the results (without force constants) to this JSON file")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="Hessian-vector products per compiled call (default: the library's default_chunk_size)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="mace-torch's device (JAX uses its default backend: set JAX_PLATFORMS to match)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "STRUCTURE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.channels = args.channels or (16 if args.quick else 128)
    if args.worker:
        worker(*args.worker, channels=args.channels, out=args.out, repeats=args.repeats,
               repeat_seconds=args.repeat_seconds, chunk_size=args.chunk_size, device=args.device)
        return
    if args.structures:
        structures = args.structures.split(",")
    elif args.quick:
        structures = ["SiO-triclinic-1", "Si64"]
    else:
        structures = ["SiO-triclinic", "Si64", "Si216", "Si512"]  # smallest first: it seeds the time estimates
    methods = args.methods.split(",")
    header = (f"MACE-MP-0 medium architecture, random weights, {args.channels} channels, float64; "
              f"chunk size {args.chunk_size or 'default'}; mace-torch on {args.device}; "
              f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(header, flush=True)
    results: list[dict] = []
    rates: dict[str, float] = {}  # method -> seconds per (atom × row) of its last measurement
    with tempfile.TemporaryDirectory() as tmp:
        for structure in structures:
            for method in methods:
                n, rows, work = work_units(method, structure)
                estimate = rates.get(method, 0.0) * work
                if estimate > args.max_seconds:
                    result = dict(method=method, structure=structure, atoms=n,
                                  skipped=f"skipped: estimated {estimate:.0f} s > {args.max_seconds:.0f} s "
                                          f"({rows} rows/calls, extrapolated from a smaller structure)")
                else:
                    result = run(method, structure, args, tmp)
                    if "seconds" in result:
                        rates[method] = warm(result) / work
                results.append(result)
                message = result.get("skipped") or result.get("error", "").strip()[-200:]
                print(f"  {structure} {method}: " + (message or f"{result['seconds']:.2f} s"), flush=True)
                if args.save:  # after every measurement, so an interrupted run keeps what it measured
                    save(args.save, header, args.channels, results)
    print(table(results))
    print("first s: first call (JAX: with compilation); warm s: median of the further calls (torch: of all calls);\n"
          "peak MB: ru_maxrss of the process; +MB: increase during the force-constant calls;\n"
          "max|ΔΦ|: against jax-full (torch-fd carries the O(h²) error of 0.01 Å displacements)")
    print(ratios(results)[0])
    if args.save:
        save(args.save, header, args.channels, results)


def save(path: str, header: str, channels: int, results: list[dict]) -> None:
    """Results without the force constants, and the speed-ups, as JSON."""
    stored = [{key: value for key, value in r.items() if key != "fc"} for r in results]
    with open(path, "w") as handle:
        json.dump(dict(header=header, channels=channels, results=stored, speedups=ratios(results)[1]), handle, indent=1)


if __name__ == "__main__":
    main()
