"""Pool-based selection of structures to label: uncertainty with diversity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .._validation import Labels, check_structures, is_bulk
from ..design import local_energy_rows
from ..exceptions import InvalidParameterError
from ..rows import structure_rows

__all__ = ["select_batch", "label_structures"]


def select_batch(
    model,
    pool: Sequence[Atoms],
    k: int,
    *,
    features: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Choose ``k`` structures of ``pool`` to label next.

    Greedy conditioning on the label-free posterior update: the score of a
    structure is the summed posterior variance of its local energies; the
    highest-scoring structure is taken, the posterior precision is updated as
    if its energy, forces and (bulk) stress had been measured with the model's
    noise (``R <- qr([R ; A_s / sigma])``, which needs no label), and, for the
    DTC form, the prior variance not explained by the sparse points is reduced
    as if the structure's environments had joined them (an incremental
    Nystrom update, which is what the next fit does); every score is
    recomputed, and so on. Structures that resemble one already chosen lose
    their score, so the batch is diverse as well as uncertain.

    Parameters
    ----------
    model : GAPRegressor
        A fitted model.
    pool : list of ase.Atoms
        Candidate structures (labels not needed).
    k : int
        Batch size.
    features : list of ndarray, optional
        ``model.descriptor_.features(atoms)`` of each pool structure, when
        already computed (they do not change between rounds).

    Returns
    -------
    ndarray of int
        Indices into ``pool``, in the order chosen.
    """
    pool = check_structures(pool, "select_batch")
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= len(pool)):
        raise InvalidParameterError(
            f"select_batch: 'k' must be an integer between 1 and {len(pool)}; got {k!r}."
        )
    fitted = model.fitted_ if hasattr(model, "fitted_") else None
    if fitted is None:
        raise InvalidParameterError("select_batch: the model is not fitted; fit it first.")
    fitted.check_species(pool, "select_batch")
    if features is None:
        features = [fitted.descriptor.features(a) for a in pool]
    rows = [
        local_energy_rows(
            f, a.numbers, fitted.sparse_features, fitted.sparse_numbers, fitted.delta, fitted.zeta
        )
        for f, a in zip(features, pool, strict=True)
    ]
    stacked = np.vstack(rows)
    q_env = np.vstack(features)
    z_env = np.concatenate([a.numbers for a in pool])
    owner = np.repeat(np.arange(len(pool)), [len(a) for a in pool])
    delta = dict(zip(fitted.sparse_numbers.tolist(), fitted.delta.tolist(), strict=True))
    d2_env = np.array([delta[z] ** 2 for z in z_env.tolist()])

    # Data-independent part of the DTC variance: the prior not explained by the
    # sparse points. Environments of a chosen structure will become sparse
    # points at the next fit, so each choice also shrinks this term by an
    # incremental Nystrom update with the chosen environments.
    dtc = fitted.variance == "dtc"
    l_inv_k = scipy.linalg.solve_triangular(fitted.sparse_cholesky, stacked.T, lower=True)
    gap = np.clip(d2_env - np.einsum("mn,mn->n", l_inv_k, l_inv_k), 0.0, None) if dtc else 0.0
    basis = np.zeros((len(z_env), 0))  # residual-kernel factors of chosen environments

    r = fitted.r_factor.copy()
    chosen: list[int] = []
    for _ in range(k):
        x = scipy.linalg.solve_triangular(r, stacked.T, trans="T")
        var = np.clip(gap + np.einsum("mn,mn->n", x, x), 0.0, None)
        score = np.bincount(owner, var, minlength=len(pool))
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        atoms = pool[best]
        # label-free update of the posterior precision with the structure's rows
        dummy = Labels(0.0, np.zeros((len(atoms), 3)), np.zeros(6) if is_bulk(atoms) else None)
        found = structure_rows(
            fitted.descriptor,
            atoms,
            dummy,
            fitted.noise.sigmas(atoms, best),
            fitted.e0,
            fitted.sparse_features,
            fitted.sparse_numbers,
            fitted.delta,
            fitted.zeta,
        )
        whitened = found.rows / found.sigma[:, None]
        r = scipy.linalg.qr(np.vstack([r, whitened]), mode="r")[0][: len(r)]
        if dtc:
            envs = np.flatnonzero(owner == best)
            same = z_env[:, None] == z_env[envs][None, :]
            k_xc = np.where(same, d2_env[:, None] * (q_env @ q_env[envs].T) ** fitted.zeta, 0.0)
            resid = k_xc - l_inv_k.T @ l_inv_k[:, envs] - basis @ basis[envs].T
            r_cc = resid[envs] + 1e-8 * np.eye(len(envs)) * d2_env[envs].mean()
            chol = np.linalg.cholesky(0.5 * (r_cc + r_cc.T))
            new = scipy.linalg.solve_triangular(chol, resid.T, lower=True).T
            basis = np.hstack([basis, new])
            gap = np.clip(gap - np.einsum("nc,nc->n", new, new), 0.0, None)
    return np.array(chosen)


def label_structures(frames: Sequence[Atoms], calculator, *, stress: bool = True) -> list[Atoms]:
    """Label copies of ``frames`` with any ASE calculator.

    Returns copies carrying energy, forces and (bulk cells, when ``stress``)
    stress in a :class:`~ase.calculators.singlepoint.SinglePointCalculator`,
    ready for ``fit`` or ``partial_fit`` and for writing to extxyz.
    """
    out = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calculator
        results = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
        if stress and is_bulk(work):
            results["stress"] = work.get_stress()
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, **results)
        out.append(labelled)
    return out
