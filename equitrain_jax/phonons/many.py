"""Phonons of many materials with few compiled programs: relaxation, force constants and thermal
properties of every structure of a list, one summary row each.

The work of a list, in order:

1. Each structure is relaxed (positions and cell, space group kept: `equitrain_jax.phonons.relax.relax`
   with ``keep_symmetry``), every one with its graph padded to one shape for the list
   (`relaxation_shape`), so the relaxations compile the force and stress function once (again
   only for a structure that outgrows it).
2. Phonopy's least displacements (``generate_displacements(is_plusminus=False)``) of each
   relaxed structure's supercell (``--supercell``, or the smallest one ``min_length`` Å wide).
3. The supercells are packed into batches of at most ``batch_atoms`` atoms (`pack_batches`),
   each batch ONE graph: its Hessian is block diagonal, so tangent k, holding displacement k of
   every material of the batch, gives all their exact harmonic forces F = −H·u at once
   (`equitrain_jax.phonons.hessian.batched_hessian_vector_products`).  A batch holds materials of
   one neighbour width (`neighbour_slots`: a sparse crystal does not pay for the densest one's
   neighbours) and is padded to a power of two of atoms (`padded_atoms`), one graph count for
   the whole list, at most ``chunk_size`` tangents per call (`tangent_chunk`; by default as many
   as keep a call's memory bounded, `TANGENT_EDGES`): the list compiles once per (padded size,
   width, chunk).
4. Phonopy's post-processing of a batch (force constants from phonopy's solver, symmetrised;
   frequencies on a Γ-centred mesh; thermal properties; files) runs in a thread pool while the
   main thread computes the next batch's products.

Units: frequencies in THz, thermal properties per mole of primitive cells as phonopy gives them
(F in kJ/mol, S and Cv in J/K/mol), volumes in Å³ per input cell.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import ase
import numpy as np
from phonopy import Phonopy

from equitrain_jax.data import PaddedShape, bucket_size, in_degree
from equitrain_jax.phonons.bridge import new_phonopy, phonopy_to_ase, supercell_for_min_length
from equitrain_jax.phonons.hessian import batched_hessian_vector_products
from equitrain_jax.phonons.many_config import BATCH_ATOMS, MESH, TANGENT_EDGES
from equitrain_jax.phonons.results import CUTOFF_FREQUENCY_THZ, IMAGINARY_TOLERANCE_THZ
from equitrain_jax.potential import Potential

SUMMARY_COLUMNS = (
    "index", "formula", "natoms", "natoms_supercell", "spacegroup", "supercell", "volume_A3",
    "min_frequency_THz", "max_frequency_THz", "imaginary_modes", "free_energy_kJ_per_mol",
    "entropy_J_per_K_mol", "heat_capacity_J_per_K_mol", "relax_steps", "seconds", "error",
)
"""Columns of ``summary.csv``, one row per input structure: ``natoms`` of the input cell,
``volume_A3`` of the relaxed input cell, frequencies on the mesh (THz, imaginary negative),
F, S, Cv at the temperature (per mole of primitive cells), ``seconds`` this material's share of
the wall time (its relaxation and post-processing, and of its batch's compiled calls its
fraction of the batch's atoms), ``error`` empty unless the material failed."""

@dataclass(frozen=True)
class ManySettings:
    """What `phonons_of_many` does with each structure.

    Attributes:
        supercell: diagonal supercell (3 repetitions) for every structure; None: the smallest one
            whose perpendicular widths reach ``min_length`` (Å), per relaxed structure.
        relax: relax positions and cell first, space group kept, to forces below ``fmax`` (eV/Å)
            in at most ``relax_steps`` BFGS steps; one that does not converge gets an error row.
        mesh: Γ-centred q-point mesh of the frequencies and thermal properties.
        temperature: of the summary's F, S, Cv (K).
        imaginary_threshold: frequencies below minus this (THz) count as imaginary.
        batch_atoms: most supercell atoms per batched graph (`pack_batches`).
        chunk_size: tangents per compiled call (default per batch: see `TANGENT_EDGES`).
        distance: phonopy's displacement length (Å); the forces are exactly linear in it.
        symprec: symmetry tolerance (Å).
        workers: threads of phonopy's post-processing, overlapping the compiled work.
    """

    supercell: Optional[tuple[int, int, int]] = None
    min_length: float = 12.0
    relax: bool = True
    fmax: float = 1e-4
    relax_steps: int = 500
    mesh: tuple[int, int, int] = MESH
    temperature: float = 300.0
    imaginary_threshold: float = IMAGINARY_TOLERANCE_THZ
    batch_atoms: int = BATCH_ATOMS
    chunk_size: Optional[int] = None
    distance: float = 0.01
    symprec: float = 1e-5
    workers: int = 2


@dataclass
class MaterialPhonons:
    """One input structure's outcome: ``row`` (the summary's columns), ``atoms`` (relaxed),
    ``phonon`` (force constants set; None if it failed) and ``directory`` (its files, if written)."""

    index: int
    atoms: ase.Atoms
    row: dict[str, Any]
    phonon: Optional[Phonopy] = None
    directory: Optional[Path] = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.row["error"])


def material_directory(index: int, atoms: ase.Atoms) -> str:
    """``<index>-<formula>``: a material's directory in the output."""
    return f"{index}-{atoms.get_chemical_formula()}"


def relaxation_shape(graphs: Sequence[Any], margin: float = 1.5) -> PaddedShape:
    """One padded graph shape for relaxing every structure of ``graphs`` (their unpadded graphs):
    atoms of the largest, and neighbour slots for ``margin`` times the largest in-degree (room for
    a cell that shrinks)."""
    return PaddedShape(
        n_node=bucket_size(max(int(np.sum(g.n_node)) for g in graphs)),
        max_neighbours=bucket_size(math.ceil(margin * max(in_degree(g) for g in graphs)), minimum=4),
        n_graph=2,
    )


def neighbour_slots(in_degree: int) -> int:
    """Neighbour slots per atom of a supercell whose largest in-degree is ``in_degree``: the next
    power of two, at least 16.  A batch's graph costs about its atoms times its slots, so batches
    keep to one width (`pack_batches`), and a list meets few (4 from 16 to 128)."""
    return max(16, 1 << max(int(in_degree) - 1, 0).bit_length())


def pack_batches(sizes: Sequence[int], displacements: Sequence[int], batch_atoms: int,
                 widths: Optional[Sequence[int]] = None) -> list[list[int]]:
    """Positions of ``sizes`` (supercell atoms) grouped into batches of at most ``batch_atoms``
    atoms (a larger supercell alone), each of one of ``widths`` (neighbour slots, `neighbour_slots`;
    default all one).  Materials are taken in order of decreasing width, displacement count, then
    size, so that a batch's materials need about as many tangents: a batch runs as many as its
    largest count, and the others get zero tangents there."""
    widths = [0] * len(sizes) if widths is None else list(widths)
    order = sorted(range(len(sizes)), key=lambda i: (-widths[i], -displacements[i], -sizes[i], i))
    batches: list[list[int]] = []
    atoms = 0
    for i in order:
        if not batches or atoms + sizes[i] > batch_atoms or widths[i] != widths[batches[-1][0]]:
            batches.append([])
            atoms = 0
        batches[-1].append(i)
        atoms += sizes[i]
    return batches


def padded_atoms(n_atoms: int, batch_atoms: int) -> int:
    """Atoms a batch of ``n_atoms`` is padded to: the next power of two (at least 16) but at most
    ``bucket_size(batch_atoms)``, so that full batches share one size and a list meets few; a
    supercell larger than that alone gets its own `bucket_size` (less than 25 % padding)."""
    cap = bucket_size(batch_atoms)
    if n_atoms > cap:
        return bucket_size(n_atoms)
    return min(max(16, 1 << (int(n_atoms) - 1).bit_length()), cap)


def tangent_chunk(n_tangents: int, chunk: int) -> int:
    """Tangents per compiled call of a batch needing ``n_tangents``: ``chunk``, or the next power
    of two if that is smaller (so that 1-displacement crystals compute 1 tangent, not ``chunk``,
    and a list meets at most 1 + log2(chunk) chunk sizes; the primal's compilation is shared)."""
    return min(chunk, 1 << max(int(n_tangents) - 1, 0).bit_length())


def plan_batches(sizes: Sequence[int], displacements: Sequence[int], widths: Sequence[int], batch_atoms: int,
                 chunk_size: Optional[int] = None, padded=padded_atoms) -> list[tuple[list[int], int, int, int]]:
    """The batches of a list (`pack_batches`), each as (positions, padded atoms, neighbour width,
    tangents per call): atoms padded by ``padded`` (default `padded_atoms`), tangents ``chunk_size``
    per call or as many as `TANGENT_EDGES` allows, cut to the batch's need (`tangent_chunk`)."""
    plan = []
    for batch in pack_batches(sizes, displacements, batch_atoms, widths):
        n_padded, width = padded(sum(sizes[i] for i in batch), batch_atoms), widths[batch[0]]
        limit = int(chunk_size or max(1, TANGENT_EDGES // (n_padded * width)))
        plan.append((batch, n_padded, width, tangent_chunk(max(displacements[i] for i in batch), limit)))
    return plan


def _empty_row(index: int, atoms: ase.Atoms) -> dict[str, Any]:
    row = {column: "" for column in SUMMARY_COLUMNS}
    row.update(index=index, formula=atoms.get_chemical_formula(), natoms=len(atoms))
    return row


def _failure(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def prepare(potential: Potential, material: MaterialPhonons, settings: ManySettings,
            shape: Optional[PaddedShape]) -> None:
    """Relax ``material`` (with ``settings.relax``) and set up its `Phonopy` with phonopy's least
    displacements; a failure is written into its row."""
    from equitrain_jax.calculator import Calculator
    from equitrain_jax.phonons.relax import relax

    start = time.perf_counter()
    atoms = material.atoms
    try:
        potential.graph(atoms)  # an element the model lacks, or a bad cell, is named here
        if settings.relax:
            try:
                with warnings.catch_warnings():  # FixSymmetry's notes on large cell steps, once per step
                    warnings.simplefilter("ignore", UserWarning)
                    outcome = relax(atoms, Calculator(potential, padded_shape=shape), settings.fmax,
                                    settings.relax_steps, relax_cell=True, keep_symmetry=True)
            except Exception as error:
                raise ValueError(f"relaxation failed: {_failure(error)}") from None
            atoms.calc = None
            material.row["relax_steps"] = outcome.steps
            if not outcome.converged:
                raise ValueError(f"relaxation did not reach fmax={settings.fmax} eV/Å in {settings.relax_steps} steps")
        material.row["volume_A3"] = round(float(atoms.get_volume()), 6)
        matrix = list(settings.supercell or supercell_for_min_length(atoms.cell.array, settings.min_length))
        with warnings.catch_warnings():  # phonopy 4's notice that "auto" is its new primitive default
            warnings.simplefilter("ignore")
            phonon = new_phonopy(atoms, np.diag(matrix), "auto", settings.symprec)
        phonon.generate_displacements(distance=settings.distance, is_plusminus=False)
        material.row.update(supercell="x".join(map(str, matrix)), natoms_supercell=len(phonon.supercell),
                            spacegroup=phonon.primitive_symmetry.get_international_table())
        material.phonon = phonon
    except Exception as error:  # one material's failure, whatever its kind, must not stop the list
        material.row["error"] = _failure(error)
        material.phonon = None
    material.timings["prepare"] = time.perf_counter() - start


def finish(material: MaterialPhonons, forces: np.ndarray, settings: ManySettings, output: Optional[Path]) -> None:
    """Phonopy's part for one material, given the exact forces [K, N, 3] (eV/Å) of its displacements:
    force constants (symmetrised), mesh frequencies, thermal properties, files under ``output``."""
    start = time.perf_counter()
    phonon = material.phonon
    try:
        phonon.forces = forces
        phonon.produce_force_constants()
        phonon.symmetrize_force_constants(show_drift=False)
        phonon.run_mesh(list(settings.mesh), is_gamma_center=True)
        frequencies = np.asarray(phonon.get_mesh_dict()["frequencies"])
        phonon.run_thermal_properties(temperatures=[settings.temperature], cutoff_frequency=CUTOFF_FREQUENCY_THZ)
        thermal = phonon.get_thermal_properties_dict()
        material.row.update(
            min_frequency_THz=round(float(frequencies.min()), 6),
            max_frequency_THz=round(float(frequencies.max()), 6),
            imaginary_modes="yes" if frequencies.min() < -settings.imaginary_threshold else "no",
            free_energy_kJ_per_mol=round(float(thermal["free_energy"][0]), 6),
            entropy_J_per_K_mol=round(float(thermal["entropy"][0]), 6),
            heat_capacity_J_per_K_mol=round(float(thermal["heat_capacity"][0]), 6),
        )
        if output is not None:
            directory = output / material_directory(material.index, material.atoms)
            directory.mkdir(parents=True, exist_ok=True)
            phonon.save(directory / "phonopy_params.yaml", settings={"force_constants": True})
            phonon.run_thermal_properties(t_min=0.0, t_max=1000.0, t_step=10.0, cutoff_frequency=CUTOFF_FREQUENCY_THZ)
            phonon.write_yaml_thermal_properties(filename=directory / "thermal_properties.yaml")
            material.directory = directory
    except Exception as error:  # as in `prepare`: this material's row says why
        material.row["error"] = _failure(error)
    material.timings["finish"] = time.perf_counter() - start


def phonons_of_many(
    potential: Potential,
    structures: Sequence[ase.Atoms],
    settings: ManySettings = ManySettings(),
    indices: Optional[Sequence[int]] = None,
    output: Optional[Path] = None,
    progress: bool = False,
    log: Optional[Any] = None,
) -> list[MaterialPhonons]:
    """Relaxation, force constants and thermal properties of each of ``structures`` (see the module).

    Args:
        potential: the model.
        structures: the crystals (Å); copies are relaxed, the inputs are left as they are.
        settings: see `ManySettings`.
        indices: each structure's index in the summary (default 0, 1, …): a process given a
            share of a list keeps the list's numbering.
        output: a directory for each material's ``<index>-<formula>/phonopy_params.yaml`` (with
            force constants) and ``thermal_properties.yaml`` (0–1000 K); None: no files.
        progress: a tqdm bar over the materials.
        log: a function receiving one line per stage (e.g. ``print``): the batches, their padded
            sizes and the number of compiled shapes.

    Returns one `MaterialPhonons` per structure, in input order; failures have ``row["error"]``.
    """
    from tqdm import tqdm

    indices = list(range(len(structures))) if indices is None else list(indices)
    materials = [MaterialPhonons(i, atoms.copy(), _empty_row(i, atoms)) for i, atoms in zip(indices, structures)]
    for material in materials:
        material.atoms.calc = None
        material.atoms.set_constraint()
    say = log or (lambda line: None)
    bar = tqdm(total=len(materials), desc="phonons", unit="material", disable=not progress)

    def done(material: MaterialPhonons) -> None:
        material.row["seconds"] = round(float(sum(material.timings.values())), 3)
        bar.update(1)

    graphs = []
    for material in materials:
        try:
            graphs.append(potential.graph(material.atoms))
        except ValueError:  # named in its row by `prepare`
            pass
    shape = relaxation_shape(graphs) if graphs else None
    bar.set_description("relaxing")
    for material in materials:
        prepare(potential, material, settings, shape)
        if material.failed:
            done(material)
    ready = [m for m in materials if not m.failed]
    if not ready:
        bar.close()
        return materials

    supercells = [phonopy_to_ase(m.phonon.supercell) for m in ready]
    counts = [len(m.phonon.dataset["first_atoms"]) for m in ready]
    sizes = [len(cell) for cell in supercells]
    slots = [neighbour_slots(in_degree(potential.graph(cell))) for cell in supercells]
    plan = plan_batches(sizes, counts, slots, settings.batch_atoms, settings.chunk_size)
    batches, padded, widths, chunks = (list(column) for column in zip(*plan))
    n_graph = bucket_size(max(len(batch) for batch in batches) + 1, minimum=2)
    say(f"{len(ready)} materials in {len(batches)} batches of ≤ {settings.batch_atoms} supercell atoms, padded to "
        f"{sorted(set(padded))} atoms ({len(set(padded))} compiled size(s)), {sorted(set(widths))} neighbour slots, "
        f"{sorted(set(chunks))} tangents per call ({len(set(zip(padded, widths, chunks)))} compiled (size, width, "
        f"chunk) shapes)")

    bar.set_description("force constants")
    futures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, settings.workers)) as pool:
        for batch, n_padded, width, chunk in zip(batches, padded, widths, chunks):
            start = time.perf_counter()
            cells = [supercells[i] for i in batch]
            offsets = np.cumsum([0] + [sizes[i] for i in batch])
            tangents = np.zeros((max(counts[i] for i in batch), offsets[-1], 3))
            for offset, i in zip(offsets, batch):
                for k, first in enumerate(ready[i].phonon.dataset["first_atoms"]):
                    tangents[k, offset + first["number"]] = first["displacement"]
            try:
                products = batched_hessian_vector_products(
                    potential, cells, tangents, chunk,
                    shape=PaddedShape(n_padded, width, n_graph),
                )
            except Exception as error:  # the batch's materials fail together, the others go on
                for i in batch:
                    ready[i].row["error"] = _failure(error)
                    done(ready[i])
                continue
            seconds = time.perf_counter() - start
            for offset, i in zip(offsets, batch):
                material = ready[i]
                material.timings["hessian"] = seconds * sizes[i] / float(offsets[-1])
                forces = -products[: counts[i], offset : offset + sizes[i]]
                future = pool.submit(finish, material, forces, settings, output)
                future.add_done_callback(lambda _, material=material: done(material))
                futures.append(future)
        bar.set_description("post-processing")
        for future in futures:
            future.result()
    bar.set_description("phonons")
    bar.close()
    return materials


def problem_row(index: int, atoms: ase.Atoms, problem: str) -> dict[str, Any]:
    """The summary row of a structure refused before any work (``problem``: why)."""
    row = _empty_row(index, atoms)
    row["error"] = problem
    return row


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``summary.csv``: the `SUMMARY_COLUMNS` of ``rows``, ordered by index."""
    import csv

    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for row in sorted(rows, key=lambda row: int(row["index"])):
            writer.writerow({key: row[key] for key in SUMMARY_COLUMNS})
    return path


def process_share(n_items: int, process: int, processes: int) -> list[int]:
    """The positions in a list of ``n_items`` that process ``process`` of ``processes`` takes:
    every ``processes``-th from its own (interleaved, so that each process meets every part of a
    list ordered by kind or size)."""
    return list(range(process, n_items, processes))


GATHER_TIMEOUT_MS = 2**31 - 1
"""How long process 0 waits for the others' rows (about 24 days: as long as a share may take)."""
HEARTBEAT_TIMEOUT_S = 900
"""The coordination service's heartbeat timeout: jax's default (100 s) declared both processes of
a two-process run dead on a machine loaded 25-fold; a process that really dies is found later."""


def join_processes(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
                   process_id: Optional[int] = None) -> Any:
    """Join the other processes of a list's run through jax.distributed's coordination service
    (``coordinator`` "host:port", or, all None, jax's detection of SLURM, Open MPI, …).

    Returns the connected ``jax._src.distributed.State``: its ``process_id``, ``num_processes``
    and ``client`` (the key-value store of `gather_rows`).  It is a State of its own, not
    ``jax.distributed``'s global one: each process computes alone on its own devices, so JAX's
    backend stays single-process (a multi-process CPU backend would make every computation, even
    the reading of the model's parameters by orbax, wait for all processes at a collective).
    """
    from jax._src import distributed  # the State class: no public handle in jax 0.10

    state = distributed.State()
    state.initialize(coordinator, num_processes, process_id, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    return state


def gather_rows(rows: Sequence[dict[str, Any]], processes: Any, key: str = "equitrain_jax/phonons_many") -> list[dict[str, Any]]:
    """Every process's ``rows`` on process 0 (its own elsewhere), through the key-value store of
    the ``processes`` (`join_processes`); all processes wait for each other at the end, so that
    none leaves before process 0 has them all."""
    import json

    client = processes.client
    client.key_value_set(f"{key}/{processes.process_id}", json.dumps(list(rows), default=float))
    gathered = list(rows)
    if processes.process_id == 0:
        gathered = []
        for process in range(processes.num_processes):
            gathered += json.loads(client.blocking_key_value_get(f"{key}/{process}", GATHER_TIMEOUT_MS))
    client.wait_at_barrier(f"{key}/gathered", GATHER_TIMEOUT_MS)
    return gathered
