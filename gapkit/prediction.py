"""Prediction workers: energies, forces, stress and their uncertainties of one structure.

Everything here reads a :class:`~gapkit.model.FittedGAP` (through the arrays
of :class:`PredictionArrays`, moved to the device once per call) and never an
estimator. The per-structure functions are plain functions of picklable
arguments so they run on joblib and Dask workers alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from joblib import Parallel, delayed

from . import uncertainty
from ._validation import is_bulk
from .backend import Backend, namespace, resolve_device, to_numpy
from .descriptors import StructureDescriptor
from .design import design_rows, local_energy_gradients, local_energy_rows, predict_structure

__all__ = ["PredictionArrays", "predict_frames", "predict_structure_results"]


@dataclass(frozen=True)
class PredictionArrays:
    """What a worker needs to predict: the fitted arrays on a device, no estimator."""

    e0: dict
    q_sparse: object
    z_sparse: np.ndarray
    weights: object
    delta: object
    zeta: int
    r_factor: object | None
    l_factor: object | None
    variance: str
    std_scale: float = 1.0

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
            std_scale=float(model.std_scale),
        )


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


#: Centres whose descriptor derivatives are held at once when predicting
#: without uncertainties (bounds memory for large cells).
CENTRE_CHUNK = 128
#: A single structure at least this big is split over ``n_jobs`` processes.
MIN_ATOMS_SPLIT = 32


def _predict_chunk(
    descriptor, atoms, centres, pairs, arrays: PredictionArrays, forces, stress, keep=False
):
    """Local energies of ``centres`` and their contributions to forces and virial
    (and the descriptor itself with ``keep``)."""
    if not keep and isinstance(arrays.q_sparse, np.ndarray):
        # NumPy: contract each centre's derivatives as they come, never store them
        def gradient(q, numbers):
            return local_energy_gradients(
                q, numbers, arrays.q_sparse, arrays.z_sparse, arrays.weights, arrays.zeta
            )

        eps, f, v = descriptor.contract_derivatives(atoms, gradient, centres, pairs)
        return centres, {"energies": eps, "forces": f, "virial": v}, None
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
    return centres, res, desc if keep else None


def _predict_one(descriptor, atoms, arrays: PredictionArrays, forces, stress, std, n_jobs=1):
    """Predictions for one structure; ``n_jobs`` > 1 spreads its centres over processes."""
    stress = stress and is_bulk(atoms)
    n_atoms = len(atoms)
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
            out.update(_predict_std(desc, arrays, False))
        return out
    pairs = descriptor.neighbour_list(atoms)
    if std:  # variances need every pair of the structure at once
        chunks = [np.arange(n_atoms)]
    else:
        n_chunks = max(-(-n_atoms // CENTRE_CHUNK), n_jobs if n_atoms >= MIN_ATOMS_SPLIT else 1)
        chunks = np.array_split(np.arange(n_atoms), n_chunks)
    if len(chunks) > 1 and n_jobs > 1 and isinstance(arrays.q_sparse, np.ndarray):
        results = Parallel(n_jobs=n_jobs)(
            delayed(_predict_chunk)(descriptor, atoms, c, pairs, arrays, forces, stress)
            for c in chunks
        )
    else:
        results = (
            _predict_chunk(descriptor, atoms, c, pairs, arrays, forces, stress, std) for c in chunks
        )
    energies = np.zeros(n_atoms)
    f = np.zeros((n_atoms, 3))
    v = np.zeros((3, 3))
    desc = None  # kept (whole structure, one chunk) when stds are wanted
    for centres, res, kept in results:
        desc = kept
        energies[centres] = to_numpy(res["energies"])
        if forces:
            f += to_numpy(res["forces"])
        if stress:
            v += to_numpy(res["virial"])
    energies += e0
    out = {"energy": float(energies.sum()), "energies": energies}
    if forces:
        out["forces"] = f
    if stress:
        v = 0.5 * (v + v.T) / atoms.get_volume()
        out["stress"] = np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
    if std:
        out.update(_predict_std(desc, arrays, forces, atoms.get_volume() if stress else None))
    return out


def _predict_std(desc, arrays: PredictionArrays, forces: bool, volume: float | None = None) -> dict:
    """Standard deviations of the local energies, the energy, the forces and (with the
    cell ``volume``) the stress."""
    xp = namespace(arrays.q_sparse)
    n_atoms = len(desc.numbers)
    m = len(arrays.z_sparse)
    delta_host = to_numpy(arrays.delta)
    delta = {int(z): float(d) for z, d in zip(arrays.z_sparse, delta_host, strict=True)}
    local_rows = local_energy_rows(
        desc.features, desc.numbers, arrays.q_sparse, arrays.z_sparse, arrays.delta, arrays.zeta
    )
    rows = [local_rows, xp.sum(local_rows, axis=0, keepdims=True)]
    stress = volume is not None
    if forces or stress:
        deriv = design_rows(
            desc,
            arrays.q_sparse,
            arrays.z_sparse,
            arrays.delta,
            arrays.zeta,
            forces=forces,
            virial=stress,
        )
        if forces:
            rows.append(xp.reshape(deriv["forces"], (3 * n_atoms, m)))
        if stress:
            rows.append(deriv["virial"])
    stacked = xp.concat(rows, axis=0)
    var = to_numpy(uncertainty.sor_variance(stacked, arrays.r_factor))
    if arrays.variance == "dtc":
        features = xp.asarray(desc.features)
        prior_local, prior_total = uncertainty.energy_prior_variance(
            features, desc.numbers, arrays.zeta, delta
        )
        prior = [to_numpy(prior_local), [prior_total]]
        if forces:
            prior.append(
                to_numpy(uncertainty.force_prior_variance(desc, arrays.zeta, delta, xp)).ravel()
            )
        if stress:
            prior.append(to_numpy(uncertainty.virial_prior_variance(desc, arrays.zeta, delta, xp)))
        var += np.concatenate(prior) - to_numpy(
            uncertainty.nystrom_variance(stacked, arrays.l_factor)
        )
    std = arrays.std_scale * np.sqrt(np.clip(var, 0.0, None))
    out = {"energies_std": std[:n_atoms], "energy_std": float(std[n_atoms])}
    if forces:
        out["forces_std"] = std[n_atoms + 1 : 4 * n_atoms + 1].reshape(n_atoms, 3)
    if stress:
        out["stress_std"] = std[len(std) - 6 :] / volume
    return out
