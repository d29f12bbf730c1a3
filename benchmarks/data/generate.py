"""Regenerate the DFT reference data in ``benchmarks/data/`` (GPAW, PBE) — resumable.

Run it in the separate DFT environment (see ``README.md`` here for how to build it)::

    nice -n 19 env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        .venv-dft/bin/python benchmarks/data/generate.py [--materials Si Al] [--dry-run]

Per material, in this order (each step needs the one before):

1. ``eos``: PBE energies of the primitive cell at lattice parameters scaled by ``EOS_SCALES``
   around a guess, fitted by a Birch–Murnaghan E(V) (``ase.eos``) → ``<material>/lattice.json``.
2. ``phonon``: phonopy finite displacements (``PHONON_DISPLACEMENT`` Å, symmetry-reduced) in the
   material's supercell of the fitted primitive cell → ``<material>/phonopy_params.yaml`` with the
   DFT forces, and ``<material>/phonon_summary.json`` (frequencies at Γ and on a mesh, THz).
3. ``scan``: only where the phonon reference has an imaginary mode at Γ: DFT energies along it,
   the energy surface the paper uses to judge a model's phase-transition behaviour.  The
   pattern is the soft Γ mode polarised along z (the degenerate subspace's projection of one z
   displacement of its most displaced atom), in mass-weighted amplitude Q (amu^½·Å), at the
   largest atomic displacements ``SCAN_MAX_DISPLACEMENTS`` → ``<material>/mode_scan.json``.
4. ``train``: the fine-tuning protocol scaled down: ``N_TRAJECTORIES`` supercells, each strained by a
   random symmetric strain (components uniform in ±``STRAIN``) and rattled (Gaussian, σ =
   ``RATTLE_STDDEV`` Å), relaxed at fixed cell by the pretrained SevenNet-0 (trajectory kept in
   ``<material>/trajectories/``); DFT labels on frames at ``FRAME_FRACTIONS`` of each trajectory
   → ``<material>/train.extxyz`` (trajectories ``TRAIN_TRAJECTORIES``) and ``valid.extxyz`` (the rest).
5. ``volumes`` (``QHA_MATERIALS``): the phonon step again at V0·``QHA_VOLUME_FACTORS`` (same
   supercell, displacement and k-point grid) → ``<material>/volumes/v<factor>/phonopy_params.yaml``
   and ``<material>/volumes.json`` (volumes, static energies from the E(V) fit): the DFT
   quasi-harmonic reference, and phonons at ±3 % volume.
6. ``large`` (``LARGE_SUPERCELL_MATERIALS``): phonons in the 3×3×3 primitive supercell →
   ``<material>/phonon_333/phonopy_params.yaml``, longer-range force constants than 2×2×2.
7. ``fc3`` (``FC3_MATERIALS``): phono3py's displacement pairs (``FC3_DISPLACEMENT`` Å,
   symmetry-reduced) in the phonon supercell at the PBE lattice, on the phonon step's k-point grid
   → ``<material>/fc3_222/phono3py_params.yaml`` with the DFT forces (``phono3py.load`` of it, or
   ``equitrain-jax finetune --phono3py``, builds fc3 and fc2).

Every calculation's result goes to its own small file as soon as it finishes (``eos/``,
``phonon/``, ``labels/``, ``trajectories/``) and is skipped when present, so an interrupted run
resumes where it stopped.  GPAW text logs go to ``--log-dir`` (not kept in git).

Labels (extxyz, ASE convention, read back into ``atoms.calc.results``): ``energy`` (eV) is GPAW's
Mermin free energy, the energy the forces and stress are derivatives of (for the insulators it
equals the zero-width energy to < 1 meV); ``forces`` (eV/Å); ``stress`` (eV/Å³, ASE sign, Voigt
order xx yy zz yz xz xy).  ``info`` also holds ``material``, ``trajectory``, ``step`` (frame index
in its trajectory) and ``sevennet_energy`` (eV, the pretrained model's energy of that frame).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import kptdensity2monkhorstpack
from ase.calculators.singlepoint import SinglePointCalculator
from ase.eos import EquationOfState
from ase.io import read, write
from ase.units import GPa, Ha

HERE = Path(__file__).resolve().parent

SETTINGS = {
    "code": "GPAW (plane waves), PAW setups from gpaw-data, built without libxc/BLAS/FFTW/MPI",
    "xc": "PBE",
    "plane_wave_cutoff_eV": 500.0,
    # Real-space grid spacing (Å) for the density and the PBE potential.  GPAW's default for
    # 500 eV (≈0.19 Å) leaves an egg-box error: in cubic BaTiO3 an O displaced by 0.01 Å felt a
    # spurious 0.013 eV/Å (the forces' sum), 40 % of its restoring force; at 0.12 Å the sum
    # fell to 4e-6 eV/Å.  Each result records the sum of its forces (force_drift) as the check.
    "grid_spacing_angstrom": 0.15,
    # Monkhorst–Pack grid, Γ-centred, n_i = ceil(density · |b_i|) with |b_i| including 2π
    # (ase.calculators.calculator.kptdensity2monkhorstpack, even=False).  The grid is fixed from
    # the undeformed cell of each family (primitive cell at the guess lattice for the E(V) points,
    # perfect supercell at the fitted lattice for phonons and training), so strain never changes it.
    "kpoint_density_per_inv_angstrom": 2.5,
    "occupations": "Fermi-Dirac",
    "smearing_width_eV": 0.1,
    # GPAW convergence criteria: energy eV per valence electron, density electrons per valence
    # electron, forces eV/Å (change between SCF iterations).
    "convergence": {"energy": 1e-6, "density": 1e-5, "forces": 1e-4},
    "eos_lattice_scales": [0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03],
    "eos_form": "birchmurnaghan",
    "phonon_displacement_angstrom": 0.01,
    "phonon_displacements": "phonopy default (symmetry-reduced, ± only where symmetry needs it)",
    "non_analytic_correction": "none (no Born charges computed; LO–TO splitting absent)",
    "pretrained_model": "SevenNet-0 (sevenn 0.13.0, '7net-0', checkpoint bundled in the wheel)",
    "relaxation": {"optimizer": "ase.optimize.BFGS", "fmax_eV_per_angstrom": 0.02,
                   "max_steps": 300, "cell": "fixed (strain kept)"},
    "n_trajectories": 7,
    "train_trajectories": [0, 1, 2, 3, 4],
    "strain_max": 0.02,
    "rattle_stddev_angstrom": 0.1,
    "frame_fractions": [0.0, 0.5],
    "random_seed": 20261126,
}

EOS_SCALES = SETTINGS["eos_lattice_scales"]
PHONON_DISPLACEMENT = SETTINGS["phonon_displacement_angstrom"]
N_TRAJECTORIES = SETTINGS["n_trajectories"]
TRAIN_TRAJECTORIES = SETTINGS["train_trajectories"]
STRAIN = SETTINGS["strain_max"]
RATTLE_STDDEV = SETTINGS["rattle_stddev_angstrom"]
FRAME_FRACTIONS = SETTINGS["frame_fractions"]
# Energy scan along a Γ instability (materials whose phonon reference has one): largest atomic
# displacement of each point (Å); E(Q) = E(−Q) by inversion, so only Q ≥ 0 is computed.
SCAN_MAX_DISPLACEMENTS = [0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2]
# Phonons at other volumes, V/V0 (V0 itself is the phonon reference): ±1.5, ±3 and ±4.5 %, the
# quasi-harmonic approximation's volume grid (±3 % also judges phonons away from V0).
QHA_VOLUME_FACTORS = [0.955, 0.97, 0.985, 1.015, 1.03, 1.045]
QHA_MATERIALS = ("Si", "Al", "C", "MgO")
# A larger supercell of the primitive cell, for longer-range force constants than 2×2×2.
LARGE_SUPERCELL = (3, 3, 3)
LARGE_SUPERCELL_MATERIALS = ("Al", "Si", "C")
# Third-order force constants (phono3py): displacement pairs in the material's phonon supercell
# (2×2×2 primitive), phono3py's default distance.  The training-side cell of the third-order
# experiment's transfer to phono3py's 64-atom examples.
FC3_DISPLACEMENT = 0.03
FC3_MATERIALS = ("Si",)


def _perovskite(a: float) -> Atoms:
    """Cubic ABO3 (Pm-3m) with A = Ba at the origin, B = Ti at the body centre; ``a`` in Å."""
    return Atoms("BaTiO3", cell=np.eye(3) * a, pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5],
                                   [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])


# name: primitive-cell builder (lattice parameter a in Å), guess for a (Å), supercell of the
# primitive cell for phonons and training structures, bonding.  Listed cheapest first.
MATERIALS = {
    "BaTiO3": dict(build=_perovskite, a_guess=4.03, supercell=(1, 1, 1),
                   bonding="ionic/covalent, cubic perovskite; ferroelectric Γ instability in PBE"),
    "Al": dict(build=lambda a: bulk("Al", "fcc", a=a), a_guess=4.04, supercell=(2, 2, 2),
               bonding="metallic"),
    "Si": dict(build=lambda a: bulk("Si", "diamond", a=a), a_guess=5.47, supercell=(2, 2, 2),
               bonding="covalent"),
    "MgO": dict(build=lambda a: bulk("MgO", "rocksalt", a=a), a_guess=4.25, supercell=(2, 2, 2),
                bonding="ionic"),
    "C": dict(build=lambda a: bulk("C", "diamond", a=a), a_guess=3.57, supercell=(2, 2, 2),
              bonding="covalent (diamond)"),
}


def harmonic_curvature(frequency_thz: float) -> float:
    """d²E/dQ² (eV per amu·Å²) of a mode of ``frequency_thz`` (negative = imaginary): ±(2πf)²."""
    from ase.units import _amu, _e

    omega = 2 * np.pi * frequency_thz * 1e12  # rad/s
    return float(np.sign(frequency_thz) * omega**2 * _amu * 1e-20 / _e)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def write_extxyz(path: Path, images) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, images, format="extxyz")
    os.replace(tmp, path)


def claim(path: Path) -> bool:
    """Claim the calculation whose result goes to ``path`` for this process (lock file with its
    pid), so that several processes can share the work; False where a live process holds it."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False
            except (ProcessLookupError, ValueError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # left by a process that died
                continue
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        return True
    return False


def release(path: Path) -> None:
    path.with_name(path.name + ".lock").unlink(missing_ok=True)


def phonopy_atoms(atoms: Atoms):
    """``atoms`` as phonopy's `PhonopyAtoms` (symbols, cell, scaled positions)."""
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell[:],
                        scaled_positions=atoms.get_scaled_positions())


def kpoint_grid(atoms: Atoms) -> list[int]:
    """Γ-centred grid for ``atoms`` at the fixed k-point density (see SETTINGS)."""
    grid = kptdensity2monkhorstpack(atoms, SETTINGS["kpoint_density_per_inv_angstrom"], even=False)
    return [int(n) for n in grid]


def dft(atoms: Atoms, grid: list[int], txt: Path) -> dict:
    """GPAW PBE single point of ``atoms`` on the k-point ``grid``; returns energies (eV), forces
    (eV/Å), their sum (force_drift, eV/Å; zero but for the grid's egg-box error), stress (eV/Å³,
    Voigt) and the wall time (s)."""
    from gpaw import GPAW, PW, FermiDirac

    txt.parent.mkdir(parents=True, exist_ok=True)
    atoms = atoms.copy()
    atoms.calc = GPAW(mode=PW(SETTINGS["plane_wave_cutoff_eV"]), xc=SETTINGS["xc"],
                      h=SETTINGS["grid_spacing_angstrom"], kpts={"size": grid, "gamma": True},
                      occupations=FermiDirac(SETTINGS["smearing_width_eV"]),
                      convergence=dict(SETTINGS["convergence"]), txt=str(txt))
    start = time.time()
    free_energy = atoms.get_potential_energy(force_consistent=True)
    forces = atoms.get_forces()
    result = {
        "free_energy": float(free_energy),
        "energy_zero_width": float(atoms.get_potential_energy()),
        "forces": forces.tolist(),
        "force_drift": forces.sum(axis=0).tolist(),
        "stress": atoms.get_stress(voigt=True).tolist(),
        "kpoint_grid": grid,
    }
    result["wall_s"] = round(time.time() - start, 1)
    return result


class Material:
    """Paths and steps of one material's reference data."""

    def __init__(self, name: str, log_dir: Path):
        if name not in MATERIALS:
            raise ValueError(f"unknown material {name!r}; choose from {sorted(MATERIALS)}")
        self.name = name
        self.spec = MATERIALS[name]
        self.dir = HERE / name
        self.log_dir = log_dir / name

    # ---- E(V) -------------------------------------------------------------------------------
    def eos_points(self) -> list[tuple[float, Path]]:
        return [(scale, self.dir / "eos" / f"scale_{scale:.3f}.json") for scale in EOS_SCALES]

    def run_eos(self, dry_run: bool) -> None:
        """Compute the missing E(V) points, then fit them (not in a dry run)."""
        a_guess = self.spec["a_guess"]
        grid = kpoint_grid(self.spec["build"](a_guess))
        for scale, path in self.eos_points():
            if path.exists():
                continue
            atoms = self.spec["build"](a_guess * scale)
            log(f"{self.name} eos a={a_guess * scale:.4f} Å ({len(atoms)} atoms, k {grid})"
                + (" [dry run]" if dry_run else " …"))
            if dry_run or not claim(path):
                continue
            result = dft(atoms, grid, self.log_dir / "eos" / f"{path.stem}.txt")
            result.update(scale=scale, a=a_guess * scale, volume=atoms.get_volume())
            write_json(path, result)
            release(path)
            log(f"{self.name} eos a={a_guess * scale:.4f} Å done in {result['wall_s']} s, "
                f"F={result['free_energy']:.5f} eV")
        if dry_run or not all(path.exists() for _, path in self.eos_points()):
            return  # (points left to another process finish there)
        points = [json.loads(path.read_text()) for _, path in self.eos_points()]
        volumes = np.array([p["volume"] for p in points])
        energies = np.array([p["free_energy"] for p in points])
        eos = EquationOfState(volumes, energies, eos=SETTINGS["eos_form"])
        v0, e0, bulk_modulus = eos.fit()
        if not volumes.min() < v0 < volumes.max():
            raise RuntimeError(f"{self.name}: E(V) minimum V0={v0:.3f} Å³ outside the sampled "
                               f"volumes {volumes.min():.3f}–{volumes.max():.3f} Å³; move a_guess")
        v_guess = self.spec["build"](a_guess).get_volume()
        lattice = {"a_angstrom": a_guess * (v0 / v_guess) ** (1 / 3), "v0_angstrom3": v0,
                   "e0_eV": e0, "bulk_modulus_GPa": bulk_modulus / GPa,
                   "eos": SETTINGS["eos_form"], "volumes_angstrom3": volumes.tolist(),
                   "free_energies_eV": energies.tolist(),
                   "wall_s": round(sum(p["wall_s"] for p in points), 1)}
        lattice.update(self.pulay_stress())
        write_json(self.dir / "lattice.json", lattice)
        log(f"{self.name} PBE lattice a={lattice['a_angstrom']:.4f} Å, "
            f"B={lattice['bulk_modulus_GPa']:.1f} GPa, Pulay correction of the stress at V0 "
            f"{lattice['pulay_correction_GPa_at_v0']:.2f} GPa")

    def pulay_stress(self) -> dict:
        """Correction making GPAW's analytic stress the derivative of the fixed-cutoff energy.

        GPAW computes the stress at a fixed set of plane waves, the E(V) points at a fixed cutoff;
        the two differ by the Pulay stress c/V (isotropic), large where the energy is far from
        converged in the cutoff (O at 500 eV: +16 GPa in BaTiO3).  ``c`` (eV) is fitted to the
        E(V) points as the mean of (σ_ii − dE/dV)·V, dE/dV from the Birch–Murnaghan fit; the
        labels' ``stress`` is σ − (c/V)·1, zero at the E(V) minimum like the energies say.
        GPAW's own atomic estimate (old GPAW's ``PW(dedecut='estimate')``, not in GPAW 26's new
        code) is recorded for comparison.
        """
        from gpaw.setup import create_setup
        from gpaw.utilities.ekin import dekindecut, ekin
        from gpaw.xc import XC

        points = [json.loads(path.read_text()) for _, path in self.eos_points()]
        volumes = np.array([p["volume"] for p in points])
        stress = np.array([np.mean(p["stress"][:3]) for p in points])
        eos = EquationOfState(volumes, np.array([p["free_energy"] for p in points]),
                              eos=SETTINGS["eos_form"])
        v0 = eos.fit()[0]
        step = 1e-4 * v0
        slope = (eos.func(volumes + step, *eos.eos_parameters)
                 - eos.func(volumes - step, *eos.eos_parameters)) / (2 * step)
        constant = float(np.mean((stress - slope) * volumes))
        ecut = SETTINGS["plane_wave_cutoff_eV"]
        xc = XC(SETTINGS["xc"])
        dedecut = sum(-dekindecut(*ekin(create_setup(symbol, xc))[:2], ecut / Ha)
                      for symbol in self.spec["build"](self.spec["a_guess"]).get_chemical_symbols())
        return {"pulay_stress_eV": constant,
                "stress_minus_dEdV_GPa": ((stress - slope) / GPa).tolist(),
                "pulay_correction_GPa_at_v0": -constant / v0 / GPa,
                "gpaw_atomic_estimate_of_pulay_correction_GPa_at_v0":
                    float(2 / 3 * ecut * dedecut / v0 / GPa)}

    def primitive(self) -> Atoms:
        lattice = json.loads((self.dir / "lattice.json").read_text())
        return self.spec["build"](lattice["a_angstrom"])

    def supercell(self) -> Atoms:
        return self.primitive().repeat(self.spec["supercell"])

    # ---- phonons ----------------------------------------------------------------------------
    def phonopy(self, unit: Atoms):
        from phonopy import Phonopy

        phonon = Phonopy(phonopy_atoms(unit), supercell_matrix=np.diag(self.spec["supercell"]))
        phonon.generate_displacements(distance=PHONON_DISPLACEMENT)
        return phonon

    def displaced_forces(self, phonon, directory: Path, grid: list[int], what: str,
                         dry_run: bool) -> bool:
        """DFT forces of every displaced supercell of ``phonon``, one file each in
        ``directory`` (computed where missing, skipped where another process holds it); sets
        ``phonon.forces`` and returns True once all exist."""
        supercells = phonon.supercells_with_displacements
        forces = []
        for index, cell in enumerate(supercells):
            path = directory / f"displacement_{index:03d}.json"
            atoms = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                          pbc=True)
            if not path.exists():
                log(f"{self.name} {what} displacement {index + 1}/{len(supercells)} "
                    f"({len(atoms)} atoms, k {grid})" + (" [dry run]" if dry_run else " …"))
                if dry_run or not claim(path):
                    continue
                result = dft(atoms, grid, self.log_dir / directory.relative_to(self.dir)
                             / f"{path.stem}.txt")
                result["positions"] = atoms.positions.tolist()
                write_json(path, result)
                release(path)
                log(f"{self.name} {what} displacement {index + 1} done in {result['wall_s']} s")
            if not path.exists():
                continue
            stored = json.loads(path.read_text())
            if not np.allclose(stored["positions"], atoms.positions, atol=1e-8):
                raise RuntimeError(f"{path}: stored positions differ from phonopy's displaced "
                                   f"supercell; delete {directory} and rerun")
            forces.append(stored["forces"])
        if len(forces) < len(supercells):
            if not dry_run:  # the last of several processes may stop while another still holds one
                log(f"{self.name} {what}: {len(forces)} of {len(supercells)} done, the rest held by another "
                    "process; rerun once it is done to write the reference")
            return False
        phonon.forces = np.array(forces)
        return True

    @staticmethod
    def save_phonopy(phonon, path: Path) -> None:
        phonon.save(str(path), settings={"force_sets": True, "displacements": True,
                                         "force_constants": False})

    def run_phonon(self, dry_run: bool) -> None:
        if not (self.dir / "lattice.json").exists():  # counted on the guess lattice
            count = len(self.phonopy(self.spec["build"](self.spec["a_guess"])).supercells_with_displacements)
            log(f"{self.name} phonon: {count} displaced supercells, once the E(V) fit is done")
            return
        phonon = self.phonopy(self.primitive())
        supercells = phonon.supercells_with_displacements
        if not self.displaced_forces(phonon, self.dir / "phonon", kpoint_grid(self.supercell()),
                                     "phonon", dry_run):
            return
        self.save_phonopy(phonon, self.dir / "phonopy_params.yaml")
        phonon.produce_force_constants()
        gamma_raw = phonon.get_frequencies([0, 0, 0])
        phonon.symmetrize_force_constants()  # as phonopy.load(...) does by default
        gamma = phonon.get_frequencies([0, 0, 0])
        phonon.run_mesh([8, 8, 8], with_eigenvectors=False)
        mesh = phonon.get_mesh_dict()["frequencies"]
        summary = {"unit": "THz (negative = imaginary)",
                   "force_constants": "symmetrized (translational invariance), as phonopy.load does",
                   "gamma": gamma.tolist(), "gamma_unsymmetrized": gamma_raw.tolist(),
                   "mesh": [8, 8, 8], "mesh_min": float(mesh.min()), "mesh_max": float(mesh.max()),
                   "n_displacements": len(supercells),
                   "wall_s": round(sum(json.loads((self.dir / "phonon" / f"displacement_{i:03d}.json")
                                                  .read_text())["wall_s"]
                                       for i in range(len(supercells))), 1)}
        write_json(self.dir / "phonon_summary.json", summary)
        log(f"{self.name} phonons: Γ {np.round(gamma, 2).tolist()} THz, mesh min "
            f"{summary['mesh_min']:.2f} THz")

    # ---- phonons at other volumes (quasi-harmonic approximation) -----------------------------
    def volume_dir(self, factor: float) -> Path:
        return self.dir / "volumes" / f"v{factor:.3f}"

    def run_volumes(self, dry_run: bool) -> None:
        """Phonons in the same supercell at the volumes V0·``QHA_VOLUME_FACTORS`` (the cell
        scaled isotropically; these crystals have no free internal coordinate), on the k-point
        grid of the V0 supercell → ``volumes/v<factor>/phonopy_params.yaml``; with the phonon
        reference at V0 and the E(V) fit, ``volumes.json`` lists what phonopy's QHA needs."""
        if not (self.dir / "lattice.json").exists():
            log(f"{self.name} volumes: once the E(V) fit is done")
            return
        lattice = json.loads((self.dir / "lattice.json").read_text())
        grid = kpoint_grid(self.supercell())
        done = []
        for factor in QHA_VOLUME_FACTORS:
            directory = self.volume_dir(factor)
            if (directory / "phonopy_params.yaml").exists():
                done.append(factor)
                continue
            phonon = self.phonopy(self.spec["build"](lattice["a_angstrom"] * factor ** (1 / 3)))
            if self.displaced_forces(phonon, directory, grid, f"volume {factor:.3f}", dry_run):
                self.save_phonopy(phonon, directory / "phonopy_params.yaml")
                done.append(factor)
        if len(done) < len(QHA_VOLUME_FACTORS) or not (self.dir / "phonopy_params.yaml").exists():
            return
        eos = EquationOfState(np.array(lattice["volumes_angstrom3"]),
                              np.array(lattice["free_energies_eV"]), eos=SETTINGS["eos_form"])
        eos.fit()
        n_cells = int(np.prod(self.spec["supercell"]))
        factors = sorted(QHA_VOLUME_FACTORS + [1.0])
        volumes = [lattice["v0_angstrom3"] * f for f in factors]
        write_json(self.dir / "volumes.json", {
            "description": "phonopy references at several volumes for the quasi-harmonic "
                           "approximation; static energies from the Birch–Murnaghan fit of the "
                           "E(V) points (lattice.json), per primitive cell",
            "volume_factors": factors,
            "volumes_angstrom3": volumes,
            "static_energies_eV": [float(eos.func(v, *eos.eos_parameters)) for v in volumes],
            "phonopy_params": [str((self.volume_dir(f) if f != 1.0 else self.dir).relative_to(self.dir)
                                   / "phonopy_params.yaml") for f in factors],
            "kpoint_grid": grid, "supercell": list(self.spec["supercell"]),
            "wall_s": round(sum(json.loads(p.read_text())["wall_s"] for f in QHA_VOLUME_FACTORS
                                for p in sorted(self.volume_dir(f).glob("displacement_*.json"))), 1),
        })
        log(f"{self.name} volumes.json: {len(factors)} volumes, {n_cells} primitive cells per supercell")

    # ---- a larger supercell (longer-range force constants) -----------------------------------
    def run_large(self, dry_run: bool) -> None:
        """Phonons in the ``LARGE_SUPERCELL`` of the primitive cell at the PBE lattice (Al, Si
        and C only: one displacement each) → ``phonon_333/phonopy_params.yaml``."""
        if self.name not in LARGE_SUPERCELL_MATERIALS:
            return
        if not (self.dir / "lattice.json").exists():
            log(f"{self.name} large supercell: once the E(V) fit is done")
            return
        directory = self.dir / "phonon_333"
        if (directory / "phonopy_params.yaml").exists():
            return
        from phonopy import Phonopy

        unit = self.primitive()
        phonon = Phonopy(phonopy_atoms(unit), supercell_matrix=np.diag(LARGE_SUPERCELL))
        phonon.generate_displacements(distance=PHONON_DISPLACEMENT)
        grid = kpoint_grid(unit.repeat(LARGE_SUPERCELL))
        if self.displaced_forces(phonon, directory, grid, "3×3×3 phonon", dry_run):
            self.save_phonopy(phonon, directory / "phonopy_params.yaml")
            log(f"{self.name} 3×3×3 phonon reference written")

    # ---- third-order force constants (phono3py displacement pairs) ----------------------------
    def run_fc3(self, dry_run: bool) -> None:
        """DFT forces of phono3py's displaced-pair supercells (``FC3_MATERIALS``) →
        ``fc3_222/phono3py_params.yaml``."""
        if self.name not in FC3_MATERIALS:
            return
        if not (self.dir / "lattice.json").exists():
            log(f"{self.name} fc3: once the E(V) fit is done")
            return
        directory = self.dir / "fc3_222"
        if (directory / "phono3py_params.yaml").exists():
            return
        from phono3py import Phono3py

        ph3 = Phono3py(phonopy_atoms(self.primitive()), supercell_matrix=np.diag(self.spec["supercell"]), log_level=0)
        ph3.generate_displacements(distance=FC3_DISPLACEMENT)
        if self.displaced_forces(ph3, directory, kpoint_grid(self.supercell()), "fc3", dry_run):
            ph3.save(str(directory / "phono3py_params.yaml"))
            log(f"{self.name} fc3 reference written ({len(ph3.supercells_with_displacements)} supercells)")

    # ---- energy along a Γ instability ---------------------------------------------------------
    def soft_mode(self):
        """(phonopy supercell, frequency THz, pattern [N, 3] Å per unit Q) of the soft Γ mode, or
        None without one.  u_i = Q e_i / √m_i (e: the mass-weighted eigenvector, tiled over the
        supercell's copies of the primitive cell and normalised over the supercell)."""
        import phonopy

        path = self.dir / "phonopy_params.yaml"
        if not path.exists():
            return None
        phonon = phonopy.load(str(path), log_level=0)  # symmetrized force constants
        frequencies, vectors = phonon.get_frequencies_with_eigenvectors([0, 0, 0])
        if frequencies[0] > -0.05:
            return None
        subspace = vectors[:, np.abs(frequencies - frequencies[0]) < 1e-3].real
        projector = subspace @ subspace.T
        n_prim = len(phonon.primitive)
        weight = np.linalg.norm(subspace.reshape(n_prim, 3, -1), axis=(1, 2))
        trial = np.zeros((n_prim, 3))
        trial[int(np.argmax(weight)), 2] = 1.0
        mode = (projector @ trial.ravel()).reshape(n_prim, 3)
        supercell = phonon.supercell
        primitive = phonon.primitive
        tiled = mode[[primitive.p2p_map[j] for j in primitive.s2p_map]]
        tiled /= np.linalg.norm(tiled)
        pattern = tiled / np.sqrt(np.asarray(supercell.masses))[:, None]
        return supercell, float(frequencies[0]), pattern

    def run_scan(self, dry_run: bool) -> None:
        found = self.soft_mode()
        if found is None:
            return
        supercell, frequency, pattern = found
        grid = kpoint_grid(Atoms(supercell.symbols, cell=supercell.cell, pbc=True,
                                 scaled_positions=supercell.scaled_positions))
        points = []
        for index, displacement in enumerate(SCAN_MAX_DISPLACEMENTS):
            q = displacement / np.abs(pattern).max()
            atoms = Atoms(supercell.symbols, cell=supercell.cell, pbc=True,
                          positions=supercell.positions + q * pattern)
            path = self.dir / "scan" / f"point_{index:02d}.json"
            if not path.exists():
                log(f"{self.name} mode scan point {index + 1}/{len(SCAN_MAX_DISPLACEMENTS)} "
                    f"(Q = {q:.3f} amu^½ Å, largest displacement {displacement:.3f} Å)"
                    + (" [dry run]" if dry_run else " …"))
                if dry_run or not claim(path):
                    continue
                result = dft(atoms, grid, self.log_dir / "scan" / f"{path.stem}.txt")
                result.update(positions=atoms.positions.tolist(), Q=q)
                write_json(path, result)
                release(path)
                log(f"{self.name} mode scan point {index + 1} done in {result['wall_s']} s")
            if path.exists():
                points.append(json.loads(path.read_text()))
        if len(points) < len(SCAN_MAX_DISPLACEMENTS):
            return
        energies = [p["free_energy"] - points[0]["free_energy"] for p in points]
        write_json(self.dir / "mode_scan.json", {
            "description": "DFT (PBE) energy along the soft Γ mode, polarised along z; positions = "
                           "positions + Q·pattern; E(−Q) = E(Q) by inversion",
            "frequency_THz": frequency, "qpoint": [0.0, 0.0, 0.0],
            "numbers": list(map(int, supercell.numbers)), "cell": np.asarray(supercell.cell).tolist(),
            "positions": np.asarray(supercell.positions).tolist(),
            "pattern_angstrom_per_Q": pattern.tolist(),
            "max_displacement_angstrom": SCAN_MAX_DISPLACEMENTS,
            "Q_amu_half_angstrom": [p["Q"] for p in points],
            "energy_eV": energies,
            "harmonic_energy_eV": [0.5 * harmonic_curvature(frequency) * p["Q"] ** 2 for p in points],
            "force_drift_max": max(float(np.abs(p["force_drift"]).max()) for p in points),
            "wall_s": round(sum(p["wall_s"] for p in points), 1),
        })
        well = int(np.argmin(energies))
        log(f"{self.name} mode scan: minimum {1e3 * energies[well]:.1f} meV at Q = "
            f"{points[well]['Q']:.3f} amu^½ Å")

    # ---- training / validation structures ---------------------------------------------------
    def start_structure(self, trajectory: int) -> Atoms:
        """Perfect supercell under a random symmetric strain (±STRAIN), then rattled."""
        rng = np.random.default_rng([SETTINGS["random_seed"], zlib.crc32(self.name.encode()),
                                     trajectory])
        atoms = self.supercell()
        strain = rng.uniform(-STRAIN, STRAIN, (3, 3))
        strain = (strain + strain.T) / 2
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
        atoms.positions += rng.normal(0.0, RATTLE_STDDEV, atoms.positions.shape)
        return atoms

    def trajectory(self, index: int, dry_run: bool) -> list[Atoms] | None:
        path = self.dir / "trajectories" / f"trajectory_{index}.extxyz"
        if path.exists():
            return read(path, index=":")
        log(f"{self.name} SevenNet-0 relaxation {index}" + (" [dry run]" if dry_run else " …"))
        if dry_run or not claim(path):
            return None
        from ase.optimize import BFGS

        atoms = self.start_structure(index)
        atoms.calc = sevennet()
        frames = []

        def keep():
            frame = atoms.copy()
            frame.info.update(sevennet_energy=float(atoms.get_potential_energy()),
                              sevennet_fmax=float(np.abs(atoms.get_forces()).max()))
            frames.append(frame)

        start = time.time()
        optimizer = BFGS(atoms, logfile=None)
        optimizer.attach(keep, interval=1)
        relax = SETTINGS["relaxation"]
        optimizer.run(fmax=relax["fmax_eV_per_angstrom"], steps=relax["max_steps"])
        write_extxyz(path, frames)
        release(path)
        log(f"{self.name} relaxation {index}: {len(frames)} frames in {time.time() - start:.1f} s")
        return frames

    def frame_indices(self, n_frames: int) -> list[int]:
        return sorted({round(f * (n_frames - 1)) for f in FRAME_FRACTIONS})

    def corrected(self, atoms: Atoms, pulay: float) -> Atoms:
        """``atoms`` with its stress label less the Pulay stress (eV/Å³): ``pulay`` (eV) is fitted
        per primitive cell (`pulay_stress`), and the Pulay stress of a cell holding n primitive
        cells is n·pulay/V — the same at the same density, like the basis-set error it comes
        from; GPAW's analytic stress kept in ``info['stress_uncorrected']`` (Voigt, eV/Å³)."""
        cells = len(atoms) / len(self.spec["build"](self.spec["a_guess"]))
        results = atoms.calc.results
        stress = results["stress"] - np.array([1, 1, 1, 0, 0, 0]) * pulay * cells / atoms.get_volume()
        atoms.info["stress_uncorrected"] = np.array(results["stress"])
        atoms.calc = SinglePointCalculator(atoms, energy=results["energy"],
                                           forces=results["forces"], stress=stress)
        return atoms

    def run_train(self, dry_run: bool) -> None:
        if not (self.dir / "lattice.json").exists():
            log(f"{self.name} training: {N_TRAJECTORIES} relaxations and "
                f"{N_TRAJECTORIES * len(FRAME_FRACTIONS)} DFT labels, once the E(V) fit is done")
            return
        grid = kpoint_grid(self.supercell())
        labelled = {}
        for index in range(N_TRAJECTORIES):
            frames = self.trajectory(index, dry_run)
            if frames is None:
                log(f"{self.name}   then {len(FRAME_FRACTIONS)} DFT labels of it"
                    + (" [dry run]" if dry_run else " (relaxation in another process)"))
                continue
            labelled[index] = []
            for step in self.frame_indices(len(frames)):
                path = self.dir / "labels" / f"trajectory_{index}_step_{step:03d}.extxyz"
                labelled[index].append(path)  # train/valid wait for it, whichever process computes it
                if not path.exists():
                    log(f"{self.name} DFT label trajectory {index} step {step}/{len(frames) - 1} "
                        f"({len(frames[step])} atoms, k {grid})" + (" [dry run]" if dry_run else " …"))
                    if dry_run or not claim(path):
                        continue
                    frame = frames[step]
                    result = dft(frame, grid, self.log_dir / "labels" / f"{path.stem}.txt")
                    atoms = Atoms(frame.symbols, positions=frame.positions, cell=frame.cell, pbc=True)
                    atoms.info.update(material=self.name, trajectory=index, step=step,
                                      sevennet_energy=frame.info["sevennet_energy"],
                                      energy_zero_width=result["energy_zero_width"],
                                      force_drift=np.array(result["force_drift"]),
                                      kpoint_grid=" ".join(map(str, grid)), wall_s=result["wall_s"])
                    atoms.calc = SinglePointCalculator(atoms, energy=result["free_energy"],
                                                       forces=np.array(result["forces"]),
                                                       stress=np.array(result["stress"]))
                    write_extxyz(path, atoms)
                    release(path)
                    log(f"{self.name} DFT label trajectory {index} step {step} done in "
                        f"{result['wall_s']} s")
        paths = [p for index in range(N_TRAJECTORIES) for p in labelled.get(index, [])]
        if dry_run or len(labelled) < N_TRAJECTORIES or not all(p.exists() for p in paths):
            return
        pulay = self.pulay_stress()["pulay_stress_eV"]
        for split, wanted in (("train", lambda i: i in TRAIN_TRAJECTORIES),
                              ("valid", lambda i: i not in TRAIN_TRAJECTORIES)):
            images = [self.corrected(read(p), pulay)
                      for index, ps in labelled.items() if wanted(index) for p in ps]
            write_extxyz(self.dir / f"{split}.extxyz", images)
            log(f"{self.name} {split}.extxyz: {len(images)} structures")


    def done(self) -> dict:
        """Finished DFT calculations per step: count and summed wall time (s)."""
        summary = {}
        for step, pattern in (("eos", "eos/*.json"), ("phonon", "phonon/*.json"),
                              ("labels", "labels/*.extxyz"), ("volumes", "volumes/*/displacement_*.json"),
                              ("large", "phonon_333/displacement_*.json")):
            walls = [json.loads(p.read_text())["wall_s"] if p.suffix == ".json"
                     else read(p).info["wall_s"] for p in sorted(self.dir.glob(pattern))]
            summary[step] = {"count": len(walls), "wall_s": round(float(sum(walls)), 1)}
        return summary


    def report_row(self) -> str:
        """One markdown table row: what is done and how long it took."""
        def load(name):
            path = self.dir / name
            return json.loads(path.read_text()) if path.exists() else None

        lattice, phonons, done = load("lattice.json"), load("phonon_summary.json"), self.done()
        counts = {split: len(read(self.dir / f"{split}.extxyz", index=":"))
                  if (self.dir / f"{split}.extxyz").exists() else 0 for split in ("train", "valid")}
        labels = done["labels"]
        n_atoms = len(self.spec["build"](self.spec["a_guess"]).repeat(self.spec["supercell"]))
        cells = [
            self.name, self.spec["bonding"].split(";")[0], str(n_atoms),
            f"{lattice['a_angstrom']:.4f}" if lattice else "–",
            f"{lattice['bulk_modulus_GPa']:.0f}" if lattice else "–",
            f"{min(phonons['gamma']):.2f} / {phonons['mesh_min']:.2f}" if phonons else "–",
            f"{counts['train']} / {counts['valid']}",
            f"{done['eos']['count']} in {done['eos']['wall_s']:.0f} s",
            f"{done['phonon']['count']} in {done['phonon']['wall_s']:.0f} s",
            f"{labels['count']} in {labels['wall_s']:.0f} s"
            + (f" ({labels['wall_s'] / labels['count']:.0f} s each)" if labels["count"] else ""),
        ]
        return "| " + " | ".join(cells) + " |"


STEPS = ("eos", "phonon", "scan", "train", "volumes", "large", "fc3")

REPORT_HEADER = (
    "| material | bonding | supercell atoms | PBE a (Å) | B (GPa) | lowest ω Γ / mesh (THz) "
    "| train / valid | E(V) points | phonon displacements | DFT labels |\n"
    "|---|---|---|---|---|---|---|---|---|---|")

_SEVENNET = None


def sevennet():
    """The pretrained SevenNet-0 ASE calculator (CPU, one thread), loaded once."""
    global _SEVENNET
    if _SEVENNET is None:
        import torch
        from sevenn.calculator import SevenNetCalculator

        torch.set_num_threads(1)
        _SEVENNET = SevenNetCalculator("7net-0", device="cpu")
    return _SEVENNET


def check_settings(dry_run: bool) -> None:
    """Refuse to mix results of different settings; record them in settings.json."""
    path = HERE / "settings.json"
    record = {"settings": SETTINGS,
              "materials": {name: {"a_guess_angstrom": spec["a_guess"],
                                   "supercell": list(spec["supercell"]), "bonding": spec["bonding"]}
                            for name, spec in MATERIALS.items()},
              "volumes": {"volume_factors": QHA_VOLUME_FACTORS, "materials": list(QHA_MATERIALS)},
              "large": {"supercell": list(LARGE_SUPERCELL), "materials": list(LARGE_SUPERCELL_MATERIALS)},
              "fc3": {"displacement_angstrom": FC3_DISPLACEMENT, "materials": list(FC3_MATERIALS)}}
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["settings"] != json.loads(json.dumps(SETTINGS)):
            raise SystemExit(f"{path} records other settings than generate.py's SETTINGS; the "
                             "stored results would mix settings — move them away or restore the settings")
    if not dry_run:
        write_json(path, record)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--materials", nargs="+", default=list(MATERIALS), metavar="NAME",
                        help=f"materials to generate, in order (default: all: {' '.join(MATERIALS)})")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS),
                        help="steps to run, in this order (default: all)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the calculations that would run, run none")
    parser.add_argument("--report", action="store_true",
                        help="print a markdown table of what is done (for README.md), run nothing")
    parser.add_argument("--log-dir", type=Path, default=HERE / "logs",
                        help="where GPAW's text output goes (default: benchmarks/data/logs)")
    args = parser.parse_args(argv)
    materials = [Material(name, args.log_dir) for name in args.materials]
    if args.report:
        print(REPORT_HEADER)
        for material in materials:
            print(material.report_row())
        return
    check_settings(args.dry_run)
    start = time.time()
    for material in materials:
        log(f"=== {material.name} ({material.spec['bonding']})")
        if "eos" in args.steps:
            material.run_eos(args.dry_run)
        if "phonon" in args.steps:
            material.run_phonon(args.dry_run)
        if "scan" in args.steps:
            material.run_scan(args.dry_run)
        if "train" in args.steps:
            material.run_train(args.dry_run)
        if "volumes" in args.steps and material.name in QHA_MATERIALS:
            material.run_volumes(args.dry_run)
        if "large" in args.steps:
            material.run_large(args.dry_run)
        if "fc3" in args.steps:
            material.run_fc3(args.dry_run)
        if args.dry_run:
            log(f"{material.name} done so far: {material.done()}")
    log(f"finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
