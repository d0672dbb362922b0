"""Prediction workers: energies, forces, stress and their uncertainties of one structure.

Everything here reads a :class:`~gapkit.model.FittedGAP` (through the arrays
of :class:`PredictionArrays`, moved to the device once per call) and never an
estimator. The per-structure functions are plain functions of picklable
arguments so they run on joblib and Dask workers alike.

Memory: a structure's descriptor derivatives (one row ``dq_i/dr_j`` of
3 x n_features per neighbour pair, about 0.5 MB per atom at r_cut 5 in Si) are
never held for the whole of a large structure. Predictions take the centres in
chunks of :data:`CENTRE_CHUNK`; so do the stds (:func:`_std_pass`), which keep
only O(n_atoms M) rows and O(n_atoms n_features) descriptors, and for the DTC
force prior blocks of atoms of at most :data:`STD_BLOCK_BYTES` of derivatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import array_api_compat
import numpy as np
from ase import Atoms
from joblib import Parallel, delayed

from . import uncertainty
from ._validation import is_bulk
from .backend import Backend, namespace, resolve_device, to_numpy
from .descriptors import StructureDescriptor
from .design import (
    design_rows,
    local_energy_gradients,
    local_energy_rows,
    pair_force_rows,
    predict_structure,
)

__all__ = ["PredictionArrays", "predict_frames", "predict_structure_results"]


#: Kinds of predictions with a std scale of their own (``PredictionArrays.std_scale``).
STD_KINDS = ("energy", "forces", "stress")


@dataclass(frozen=True)
class PredictionArrays:
    """What a worker needs to predict: the fitted arrays on a device, no estimator.

    ``std_scale`` holds the factor on the predicted standard deviations per kind:
    ``energy`` (total and local energies), ``forces`` and ``stress``.
    """

    e0: dict
    q_sparse: object
    z_sparse: np.ndarray
    weights: object
    delta: object
    zeta: int
    r_factor: object | None
    l_factor: object | None
    variance: str
    std_scale: dict = field(default_factory=lambda: dict.fromkeys(STD_KINDS, 1.0))

    @classmethod
    def of(cls, model, backend: Backend, std: bool) -> PredictionArrays:
        """The arrays of a fitted model on ``backend``'s device."""
        on = backend.asarray
        return cls(
            e0=dict(model.e0),
            q_sparse=on(model.sparse_features),
            z_sparse=np.asarray(model.sparse_numbers),
            weights=on(model.coefficients * model.delta**2),
            delta=on(model.delta),
            zeta=model.zeta,
            r_factor=on(model.r_factor) if std else None,
            l_factor=on(model.sparse_cholesky) if std else None,
            variance=model.variance,
            std_scale=_std_scales(model.std_scale),
        )


def _std_scales(scale) -> dict[str, float]:
    """``{"energy": s_E, "forces": s_F, "stress": s_S}`` from one number or a mapping."""
    if isinstance(scale, Mapping):
        return {kind: float(scale[kind]) for kind in STD_KINDS}
    return dict.fromkeys(STD_KINDS, float(scale))


def _features_only(descriptor, atoms) -> StructureDescriptor:
    return StructureDescriptor(descriptor.features(atoms), atoms.numbers.copy())


def predict_frames(
    model,
    frames: Sequence[Atoms],
    *,
    forces: bool,
    stress: bool,
    std: bool = False,
    backend: Backend | None = None,
    n_jobs: int = 1,
    scheduler=None,
    progress=None,
) -> list[dict]:
    """GAP predictions (without the baseline) of checked structures.

    Parameters
    ----------
    model : FittedGAP
    frames : list of ase.Atoms
        Checked structures of trained species.
    forces, stress, std : bool
        What to compute besides energies (stress for bulk cells only).
    backend : Backend, optional
        Where to compute (NumPy on the CPU when None).
    n_jobs : int, default=1
        joblib processes: over structures, or over the centres of a single one.
    scheduler : str, optional
        A Dask scheduler (``"local"`` or an address) for several structures.
    progress : callable, optional
        ``progress(iterable, total)`` wrapping the results (a progress bar).

    Returns
    -------
    list of dict
        One per structure: ``energy``, ``energies``, and as asked ``forces``,
        ``stress``, ``energy_std``, ``energies_std``, ``forces_std``, ``stress_std``.
    """
    backend = resolve_device("cpu") if backend is None else backend
    arrays = PredictionArrays.of(model, backend, std)
    wrap = progress or (lambda it, total: it)
    descriptor = model.descriptor
    if not backend.is_numpy:  # device arrays stay in this process
        return [
            _predict_one(descriptor, a, arrays, forces, stress, std)
            for a in wrap(frames, len(frames))
        ]
    if scheduler is not None and len(frames) > 1:
        from .distributed import dask_client, map_ordered

        with dask_client(scheduler, n_jobs) as client:
            return list(
                wrap(
                    map_ordered(
                        client,
                        predict_structure_results,
                        frames,
                        descriptor,
                        arrays,
                        (forces, stress, std),
                    ),
                    len(frames),
                )
            )
    n_jobs = n_jobs or 1
    # one structure (an MD step): spread its centres over the processes instead
    per_structure_jobs = n_jobs if len(frames) == 1 else 1
    jobs = (
        delayed(_predict_one)(descriptor, a, arrays, forces, stress, std, per_structure_jobs)
        for a in frames
    )
    parallel = Parallel(n_jobs=1 if len(frames) <= 1 else n_jobs, return_as="generator")
    return list(wrap(parallel(jobs), len(frames)))


def predict_structure_results(atoms, descriptor, arrays: PredictionArrays, flags) -> dict:
    """Predictions of one structure (a Dask task); ``flags`` = (forces, stress, std)."""
    return _predict_one(descriptor, atoms, arrays, *flags)


#: Centres whose descriptor derivatives are held at once (bounds memory for
#: large cells; the std pass takes its centres in chunks of this size too).
CENTRE_CHUNK = 128
#: A single structure at least this big is split over ``n_jobs`` processes.
MIN_ATOMS_SPLIT = 32


def _predict_chunk(descriptor, atoms, centres, pairs, arrays: PredictionArrays, forces, stress):
    """Local energies of ``centres`` and their contributions to forces and virial."""
    if isinstance(arrays.q_sparse, np.ndarray):
        # NumPy: contract each centre's derivatives as they come, never store them
        def gradient(q, numbers):
            return local_energy_gradients(
                q, numbers, arrays.q_sparse, arrays.z_sparse, arrays.weights, arrays.zeta
            )

        eps, f, v = descriptor.contract_derivatives(atoms, gradient, centres, pairs)
        return centres, {"energies": eps, "forces": f, "virial": v}
    desc = descriptor.features_and_derivatives(atoms, centres=centres, neighbours=pairs)
    res = predict_structure(
        desc,
        arrays.q_sparse,
        arrays.z_sparse,
        arrays.weights,
        arrays.zeta,
        forces=forces,
        virial=stress,
        n_atoms=len(atoms),
    )
    return centres, res


#: Bytes of descriptor derivatives (rows ``dq_i/dr_j``, 3 x n_features float64
#: each) that one block of atoms of the DTC force std holds. Atoms are taken in
#: spatially compact blocks small enough for this; a structure that fits in one
#: block is done in one (no centre computed twice).
STD_BLOCK_BYTES = 256 * 2**20
#: Fewest atoms in a block of the DTC force std, whatever :data:`STD_BLOCK_BYTES`
#: says (the centres around a block are computed again for each block, so small
#: blocks cost time).
MIN_STD_BLOCK = 32
#: Rows of local-energy kernel rows built and solved at once for the energy stds.
STD_ROW_BLOCK = 4096


def _predict_one(descriptor, atoms, arrays: PredictionArrays, forces, stress, std, n_jobs=1):
    """Predictions for one structure; ``n_jobs`` > 1 spreads its centres over processes."""
    stress = stress and is_bulk(atoms)
    e0 = np.array([arrays.e0[s] for s in atoms.get_chemical_symbols()])
    if not (forces or stress):
        desc = _features_only(descriptor, atoms)
        res = predict_structure(
            desc,
            arrays.q_sparse,
            arrays.z_sparse,
            arrays.weights,
            arrays.zeta,
            forces=False,
            virial=False,
        )
        energies = to_numpy(res["energies"]) + e0
        out = {"energy": float(energies.sum()), "energies": energies}
        if std:
            out.update(_predict_std(_StdParts(desc.features, desc.numbers), arrays))
        return out
    pairs = descriptor.neighbour_list(atoms)
    if std:
        energies, f, v, parts = _std_pass(descriptor, atoms, pairs, arrays, forces, stress)
    else:
        energies, f, v = _predict_chunks(descriptor, atoms, pairs, arrays, forces, stress, n_jobs)
    energies += e0
    out = {"energy": float(energies.sum()), "energies": energies}
    if forces:
        out["forces"] = f
    if stress:
        v = 0.5 * (v + v.T) / atoms.get_volume()
        out["stress"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
    if std:
        if stress:
            parts.volume = atoms.get_volume()
        out.update(_predict_std(parts, arrays))
    return out


def _predict_chunks(descriptor, atoms, pairs, arrays, forces, stress, n_jobs):
    """Local energies, forces and virial without uncertainties, over chunks of centres."""
    n_atoms = len(atoms)
    n_chunks = max(-(-n_atoms // CENTRE_CHUNK), n_jobs if n_atoms >= MIN_ATOMS_SPLIT else 1)
    chunks = np.array_split(np.arange(n_atoms), n_chunks)
    if len(chunks) > 1 and n_jobs > 1 and isinstance(arrays.q_sparse, np.ndarray):
        results = Parallel(n_jobs=n_jobs)(
            delayed(_predict_chunk)(descriptor, atoms, c, pairs, arrays, forces, stress)
            for c in chunks
        )
    else:
        results = (
            _predict_chunk(descriptor, atoms, c, pairs, arrays, forces, stress) for c in chunks
        )
    energies = np.zeros(n_atoms)
    f = np.zeros((n_atoms, 3))
    v = np.zeros((3, 3))
    for centres, res in results:
        energies[centres] = to_numpy(res["energies"])
        if forces:
            f += to_numpy(res["forces"])
        if stress:
            v += to_numpy(res["virial"])
    return energies, f, v


# ------------------------------------------------------------------ uncertainties
@dataclass
class _StdParts:
    """What the std pass over a structure leaves for :func:`_predict_std`.

    Attributes
    ----------
    features : ndarray of shape (n_atoms, n_features)
    numbers : ndarray of shape (n_atoms,)
    force_var : ndarray of shape (n_atoms, 3), optional
        Finished force variances (DTC, computed block by block).
    force_rows : ndarray of shape (n_atoms, 3, M), optional
        Force rows of K_NM (host), when the variances are still to solve (SOR).
    virial_rows : array of shape (6, M), optional
        Rows of ``V * stress``, in the namespace of the sparse points.
    strain : ndarray of shape (n_atoms, 6, n_features), optional
        Symmetrised strain derivatives (DTC virial prior).
    volume : float, optional
        Cell volume in Å^3, when stress stds are wanted.
    """

    features: np.ndarray
    numbers: np.ndarray
    force_var: np.ndarray | None = None
    force_rows: np.ndarray | None = None
    virial_rows: object | None = None
    strain: np.ndarray | None = None
    volume: float | None = None


def _delta_of(arrays: PredictionArrays) -> dict[int, float]:
    delta_host = to_numpy(arrays.delta)
    return {int(z): float(d) for z, d in zip(arrays.z_sparse, delta_host, strict=True)}


def _ranges(starts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(starts[a], starts[a + 1])`` for each ``a`` in ``idx``."""
    counts = starts[idx + 1] - starts[idx]
    offsets = np.repeat(starts[idx] - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return np.arange(counts.sum(), dtype=np.intp) + offsets


def _compact_blocks(positions: np.ndarray, size: int) -> list[np.ndarray]:
    """Spatially compact blocks of at most ``size`` atoms (sorted indices each).

    Recursive bisection at the median of the widest coordinate, into parts of
    nearly equal size: compact blocks have the fewest neighbours outside them.
    """
    out = []
    stack = [np.arange(len(positions))]
    while stack:
        idx = stack.pop()
        if len(idx) <= size:
            out.append(np.sort(idx))
            continue
        p = positions[idx]
        axis = int(np.argmax(np.ptp(p, axis=0)))
        n_parts = -(-len(idx) // size)
        left = len(idx) * (n_parts // 2) // n_parts
        split = np.argpartition(p[:, axis], left)
        stack += [idx[split[left:]], idx[split[:left]]]
    return out[::-1]


def _centre_subset(desc: StructureDescriptor, keep: np.ndarray) -> StructureDescriptor:
    """The centres ``keep`` (a mask over ``desc``'s centres) and their pairs."""
    idx = np.flatnonzero(keep)
    new = np.full(len(keep), -1)
    new[idx] = np.arange(len(idx))
    in_pairs = keep[desc.centre]
    return StructureDescriptor(
        features=desc.features[idx],
        numbers=desc.numbers[idx],
        centre=new[desc.centre[in_pairs]],
        neighbour=desc.neighbour[in_pairs],
        dq_dr=desc.dq_dr[in_pairs],
        dq_dstrain=desc.dq_dstrain[idx],
    )


def _pair_force_rows(arrays: PredictionArrays, features, numbers, centre, neighbour, dq_dr):
    """:func:`gapkit.design.pair_force_rows` at the model's sparse points."""
    return pair_force_rows(
        features,
        numbers,
        centre,
        neighbour,
        dq_dr,
        arrays.q_sparse,
        arrays.z_sparse,
        arrays.delta,
        arrays.zeta,
    )


def _std_block_size(atoms, pairs, descriptor) -> int:
    """Atoms per block of the DTC force std (see :data:`STD_BLOCK_BYTES`)."""
    rows_per_atom = 1.0 + len(pairs[0]) / max(len(atoms), 1)
    per_atom = rows_per_atom * 3 * descriptor.n_features * 8
    return max(MIN_STD_BLOCK, int(STD_BLOCK_BYTES // per_atom))


def _std_pass(descriptor, atoms, pairs, arrays: PredictionArrays, forces: bool, stress: bool):
    """Predictions and the parts of their stds, one chunk of centres' derivatives at a time.

    Without the DTC force prior, every centre is computed once, in chunks of
    :data:`CENTRE_CHUNK`, and the force rows are summed onto the atoms (host
    array, O(n_atoms M)). The DTC force prior of atom ``j`` needs
    ``dq_i/dr_j`` of every centre ``i`` around ``j`` at once: the atoms are
    split into spatially compact blocks ``J`` (:data:`STD_BLOCK_BYTES`), and
    for each block the centres with a neighbour in ``J`` are computed (again,
    for those outside ``J``), keeping only their pairs that end in ``J``; the
    force rows, prior and variances of ``J`` are then complete.

    Returns
    -------
    energies, forces, virial : ndarray
        Local energies (without e0), forces and ``V * stress`` (3, 3), as
        :func:`_predict_chunk` gives them.
    parts : _StdParts
    """
    xp = namespace(arrays.q_sparse)
    dev = array_api_compat.device(arrays.q_sparse)
    n = len(atoms)
    m = len(arrays.z_sparse)
    n_feat = descriptor.n_features
    dtc = arrays.variance == "dtc"
    halo = forces and dtc
    starts = np.searchsorted(pairs[0], np.arange(n + 1))
    size = _std_block_size(atoms, pairs, descriptor) if halo else n
    if n <= size:
        blocks = [np.arange(n)]
    else:
        blocks = _compact_blocks(atoms.get_positions(wrap=True), size)

    parts = _StdParts(np.empty((n, n_feat)), atoms.numbers.copy())
    totals = {"energies": np.zeros(n), "forces": np.zeros((n, 3)), "virial": np.zeros((3, 3))}
    if stress:
        parts.virial_rows = xp.zeros((6, m), dtype=arrays.q_sparse.dtype, device=dev)
        if dtc:
            parts.strain = np.empty((n, 6, n_feat))
    if forces and not dtc:
        parts.force_rows = np.zeros((n, 3, m))
    kept = None
    chunk_size = CENTRE_CHUNK
    if halo:
        parts.force_var = np.empty((n, 3))
        if len(blocks) > 1:
            kept = _KeptPairs(starts, blocks, n_feat)
        else:  # within the budget: the whole structure's derivatives at once
            chunk_size = n

    for block in blocks:
        own = np.zeros(n, dtype=bool)
        own[block] = True
        if len(block) < n:
            # the neighbour list is a full one: the centres with a neighbour in the
            # block are the neighbours of the block's atoms; the block's own come
            # first, so that only one chunk mixes both
            around = np.unique(pairs[1][_ranges(starts, block)])
            centres = np.concatenate([block, around[~own[around]]])
        else:
            centres = block
        if kept is not None:
            kept.clear()
        for chunk in np.array_split(centres, -(-len(centres) // chunk_size)):
            d = descriptor.features_and_derivatives(atoms, centres=chunk, neighbours=pairs)
            parts.features[chunk] = d.features
            mine = own[chunk]
            if mine.any():
                d_own = d if mine.all() else _centre_subset(d, mine)
                _add_own_terms(d_own, chunk[mine], arrays, forces, stress, totals, parts)
            if parts.force_rows is not None:
                ends, rows = _pair_force_rows(
                    arrays, d.features, d.numbers, d.centre, d.neighbour, d.dq_dr
                )
                parts.force_rows[ends] += to_numpy(rows)
            if halo:
                if kept is None:  # one block, one chunk: all pairs of the structure
                    kept_arrays = (chunk[d.centre], d.neighbour, d.dq_dr)
                else:
                    kept.add(chunk[d.centre], d.neighbour, d.dq_dr, own)
            del d
        if halo:
            if kept is not None:
                kept_arrays = kept.arrays()
            parts.force_var[block] = _block_force_variance(
                arrays, parts.features, parts.numbers, centres, block, kept_arrays
            )
            del kept_arrays
    return totals["energies"], totals["forces"], totals["virial"], parts


def _add_own_terms(desc, centres, arrays, forces, stress, totals, parts) -> None:
    """Predictions, virial rows and strain derivatives of a chunk's own centres
    (``desc``, atoms ``centres``) added to ``totals`` and ``parts``."""
    res = predict_structure(
        desc,
        arrays.q_sparse,
        arrays.z_sparse,
        arrays.weights,
        arrays.zeta,
        forces=forces,
        virial=stress,
        n_atoms=len(totals["energies"]),
    )
    totals["energies"][centres] = to_numpy(res["energies"])
    if forces:
        totals["forces"] += to_numpy(res["forces"])
    if not stress:
        return
    totals["virial"] += to_numpy(res["virial"])
    strain_only = StructureDescriptor(desc.features, desc.numbers, dq_dstrain=desc.dq_dstrain)
    rows = design_rows(
        strain_only,
        arrays.q_sparse,
        arrays.z_sparse,
        arrays.delta,
        arrays.zeta,
        forces=False,
        virial=True,
    )
    parts.virial_rows = parts.virial_rows + rows["virial"]
    if parts.strain is not None:
        parts.strain[centres] = uncertainty._symmetric_strain(desc.dq_dstrain)


class _KeptPairs:
    """The pairs ``(i, j)`` with ``j`` in a block, gathered over chunks of centres
    into one buffer, allocated once for the largest block and reused."""

    def __init__(self, starts: np.ndarray, blocks, n_feat: int):
        # at most one row per neighbour-list entry ending in the block (a full
        # list: as many as start there) plus each atom's own row
        bound = max(int((starts[b + 1] - starts[b]).sum()) + len(b) for b in blocks)
        self.centre = np.empty(bound, dtype=np.intp)
        self.neighbour = np.empty(bound, dtype=np.intp)
        self.dq_dr = np.empty((bound, 3, n_feat))
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, centre, neighbour, dq_dr, own) -> None:
        idx = np.flatnonzero(own[neighbour])
        end = self.n + len(idx)
        self.centre[self.n : end] = centre[idx]
        self.neighbour[self.n : end] = neighbour[idx]
        np.take(dq_dr, idx, axis=0, out=self.dq_dr[self.n : end], mode="clip")  # unbuffered
        self.n = end

    def arrays(self):
        return self.centre[: self.n], self.neighbour[: self.n], self.dq_dr[: self.n]


def _block_force_variance(arrays, features, numbers, centres, block, kept) -> np.ndarray:
    """DTC force variances (len(block), 3) of the atoms of a block from the pairs
    ``kept`` = (centre atom, neighbour atom, dq_dr) that end in it."""
    xp = namespace(arrays.q_sparse)
    centre, neighbour, dq_dr = kept
    position = np.full(len(numbers), -1)
    position[centres] = np.arange(len(centres))
    c_local = position[centre]
    position[block] = np.arange(len(block))
    j_local = position[neighbour]
    q, z = features[centres], numbers[centres]
    ends, rows = _pair_force_rows(arrays, q, z, c_local, j_local, dq_dr)
    if len(ends) != len(block):  # every atom has its own row
        raise AssertionError("an atom of the block has no derivative row")
    rows = xp.reshape(rows, (3 * len(block), rows.shape[-1]))
    sor = to_numpy(uncertainty.sor_variance(rows, arrays.r_factor))
    prior = uncertainty.pair_force_prior_variance(
        q, z, c_local, j_local, dq_dr, len(block), arrays.zeta, _delta_of(arrays), xp
    )
    nys = to_numpy(uncertainty.nystrom_variance(rows, arrays.l_factor))
    return (sor + (to_numpy(prior).ravel() - nys)).reshape(len(block), 3)


def _predict_std(parts: _StdParts, arrays: PredictionArrays) -> dict:
    """Standard deviations of the local energies, the energy, the forces and (with
    the cell ``volume``) the stress, each scaled by its kind's ``std_scale``.

    Local-energy rows are built and solved :data:`STD_ROW_BLOCK` at a time;
    nothing held is larger than O(n_atoms M) (the force rows) or O(n_atoms D).
    """
    xp = namespace(arrays.q_sparse)
    dev = array_api_compat.device(arrays.q_sparse)
    n_atoms = len(parts.numbers)
    m = len(arrays.z_sparse)
    dtc = arrays.variance == "dtc"
    delta = _delta_of(arrays)
    scale = arrays.std_scale

    def solved(rows):
        """``(SOR, Nyström)`` variances of rows (Nyström 0 for SOR)."""
        sor = to_numpy(uncertainty.sor_variance(rows, arrays.r_factor))
        if not dtc:
            return sor, 0.0
        return sor, to_numpy(uncertainty.nystrom_variance(rows, arrays.l_factor))

    def std_of(var, kind):
        return scale[kind] * np.sqrt(np.clip(var, 0.0, None))

    local_sor, local_nys = np.empty(n_atoms), np.zeros(n_atoms)
    total_row = xp.zeros((1, m), dtype=arrays.q_sparse.dtype, device=dev)
    for start in range(0, n_atoms, STD_ROW_BLOCK):
        sl = slice(start, start + STD_ROW_BLOCK)
        rows = local_energy_rows(
            parts.features[sl],
            parts.numbers[sl],
            arrays.q_sparse,
            arrays.z_sparse,
            arrays.delta,
            arrays.zeta,
        )
        total_row = total_row + xp.sum(rows, axis=0, keepdims=True)
        local_sor[sl], local_nys[sl] = solved(rows)
    total_sor, total_nys = solved(total_row)
    local_var, total_var = local_sor, total_sor
    if dtc:
        prior_local, prior_total = uncertainty.energy_prior_variance(
            xp.asarray(parts.features, device=dev), parts.numbers, arrays.zeta, delta
        )
        local_var = local_sor + (to_numpy(prior_local) - local_nys)
        total_var = total_sor + (prior_total - total_nys)
    out = {
        "energies_std": std_of(local_var, "energy"),
        "energy_std": float(std_of(total_var, "energy")[0]),
    }
    if parts.force_var is not None:
        out["forces_std"] = std_of(parts.force_var, "forces")
    elif parts.force_rows is not None:
        if dtc:
            raise AssertionError("DTC force variances come finished from the std pass")
        flat = parts.force_rows.reshape(3 * n_atoms, m)
        var = np.concatenate(
            [
                solved(xp.asarray(flat[s : s + STD_ROW_BLOCK], device=dev))[0]
                for s in range(0, len(flat), STD_ROW_BLOCK)
            ]
        )
        out["forces_std"] = std_of(var.reshape(n_atoms, 3), "forces")
    if parts.volume is not None:
        sor, nys = solved(parts.virial_rows)
        var = sor
        if dtc:
            prior = to_numpy(
                uncertainty._virial_prior(
                    parts.features, parts.numbers, parts.strain, arrays.zeta, delta, xp
                )
            )
            var = sor + (prior - nys)
        out["stress_std"] = std_of(var, "stress") / parts.volume
    return out
