"""Design-matrix rows and predictions from descriptors (arrays in, arrays out).

For a structure with normalised descriptors ``q_i`` and sparse points ``q_m``
(each with a species and an energy scale ``delta_m``):

- energy row: ``K_E[m] = sum_i k(q_i, q_m)``;
- force rows: ``K_F[j, b, m] = -sum_(i,j) g_im (dq_i/dr_j[b] . q_m)`` with
  ``g_im = delta_m^2 zeta (q_i . q_m)^(zeta-1)``;
- virial rows (``V * stress``, ASE sign):
  ``K_V[a, b, m] = sum_i g_im (dq_i/deps_ab . q_m)``, symmetrised, Voigt order.

``k`` is zero between centres and sparse points of different species.

The functions follow the array API: the namespace (NumPy, CuPy, ...) and the
device are those of ``q_sparse``; the descriptor's arrays, computed by DScribe
on the host, are moved there in chunks. Index bookkeeping (which centres and
sparse points belong to which species) stays on the host.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .backend import index_add, namespace, to_numpy
from .descriptors import StructureDescriptor
from .units import VOIGT_PAIRS

__all__ = [
    "design_rows",
    "pair_force_rows",
    "local_energy_rows",
    "local_energy_gradients",
    "predict_structure",
]

_VOIGT = [3 * a + b for a, b in VOIGT_PAIRS]
_VOIGT_T = [3 * b + a for a, b in VOIGT_PAIRS]
#: Pairs handled at once when building force rows (bounds the temporary arrays).
PAIR_CHUNK = 4096


def _species_blocks(sparse_numbers, numbers: np.ndarray):
    """Per species present in both: (z, sparse columns, centres), host indices.

    The columns of every species are listed in order; ``order`` is their
    concatenation, so that blocks computed species by species and joined along
    the column axis can be put back with ``argsort(order)``.
    """
    z_sparse = to_numpy(sparse_numbers)
    species = np.unique(z_sparse)
    cols = [np.flatnonzero(z_sparse == z) for z in species]
    order = np.concatenate(cols) if cols else np.zeros(0, int)
    blocks = [(int(z), c, np.flatnonzero(numbers == z)) for z, c in zip(species, cols, strict=True)]
    return blocks, order


def _join_columns(xp, parts, order: np.ndarray, dev):
    """Concatenate per-species column blocks and restore the sparse-point order."""
    joined = xp.concat(parts, axis=-1)
    if np.array_equal(order, np.arange(len(order))):
        return joined
    back = xp.asarray(np.argsort(order), device=dev)
    return xp.take(joined, back, axis=joined.ndim - 1)


def _on(xp, x, dev):
    """A host array on the namespace's device (no copy for NumPy)."""
    return xp.asarray(x, device=dev)


def local_energy_rows(features, numbers: np.ndarray, q_sparse, sparse_numbers, delta, zeta: int):
    """Kernel rows of the local energies, ``k(q_i, q_m)``, shape (n_atoms, M).

    Parameters
    ----------
    features : array of shape (n_atoms, n_features)
        Normalised descriptors (host or device array).
    numbers : ndarray of shape (n_atoms,)
        Atomic numbers (host array).
    q_sparse, sparse_numbers, delta, zeta
        As in :func:`design_rows`; the result is in the namespace of ``q_sparse``.
    """
    xp = namespace(q_sparse)
    dev = array_api_compat.device(q_sparse)
    features = _on(xp, features, dev)
    delta_host = to_numpy(delta)
    blocks, order = _species_blocks(sparse_numbers, numbers)
    parts = []
    for _z, cols, centres in blocks:
        qs = xp.take(q_sparse, _on(xp, cols, dev), axis=0)
        centres_d = _on(xp, centres, dev)
        k = float(delta_host[cols[0]]) ** 2 * (xp.take(features, centres_d, axis=0) @ qs.T) ** zeta
        parts.append(index_add(xp, centres_d, k, len(numbers)))  # zero rows elsewhere
    return _join_columns(xp, parts, order, dev)


def local_energy_gradients(
    features,
    numbers: np.ndarray,
    q_sparse,
    sparse_numbers,
    weights,
    zeta: int,
    *,
    gradient: bool = True,
):
    """Local energies ``eps_i`` and their gradients ``d eps_i / d q_i``.

    Parameters
    ----------
    features : array of shape (n, n_features)
        Normalised descriptors (host or device array).
    numbers : ndarray of shape (n,)
        Atomic numbers (host array).
    q_sparse, sparse_numbers, weights, zeta
        As in :func:`predict_structure`; results are in the namespace of ``q_sparse``.
    gradient : bool, default=True
        Also return the gradients (else None).

    Returns
    -------
    eps : array of shape (n,)
    grad : array of shape (n, n_features) or None
    """
    xp = namespace(q_sparse)
    dev = array_api_compat.device(q_sparse)
    features = _on(xp, features, dev)
    n = len(numbers)
    blocks, _ = _species_blocks(sparse_numbers, numbers)
    energies = xp.zeros(n, dtype=q_sparse.dtype, device=dev)
    grad = xp.zeros(features.shape, dtype=q_sparse.dtype, device=dev) if gradient else None
    for _z, cols, centres in blocks:
        if len(centres) == 0:
            continue
        cols_d, centres_d = _on(xp, cols, dev), _on(xp, centres, dev)
        qs = xp.take(q_sparse, cols_d, axis=0)
        w = xp.take(weights, cols_d, axis=0)
        dots = xp.take(features, centres_d, axis=0) @ qs.T
        energies = energies + index_add(xp, centres_d, dots**zeta @ w, n)
        if gradient:
            grad = grad + index_add(xp, centres_d, (zeta * dots ** (zeta - 1) * w) @ qs, n)
    return energies, grad


def design_rows(
    desc: StructureDescriptor,
    q_sparse,
    sparse_numbers,
    delta,
    zeta: int,
    *,
    forces: bool = True,
    virial: bool = True,
) -> dict:
    """Rows of K_NM for one structure.

    Parameters
    ----------
    desc : StructureDescriptor
        With derivatives when ``forces`` or ``virial`` is requested.
    q_sparse : array of shape (M, n_features)
        Any array-API namespace; the rows are returned in the same one.
    sparse_numbers : array of shape (M,)
        Species (atomic number) of each sparse point.
    delta : array of shape (M,)
        Energy scale in eV of each sparse point's species.
    zeta : int

    Returns
    -------
    dict
        ``"energy"``: (M,); ``"forces"``: (n_atoms, 3, M) when asked;
        ``"virial"``: (6, M) when asked (rows of ``V * stress``).
    """
    xp = namespace(q_sparse)
    dev = array_api_compat.device(q_sparse)
    n_atoms = len(desc.numbers)
    delta_host = to_numpy(delta)
    blocks, order = _species_blocks(sparse_numbers, desc.numbers)
    features = _on(xp, desc.features, dev)
    energy, vir = [], []
    for _, cols, centres in blocks:
        ms = len(cols)
        qs = xp.take(q_sparse, _on(xp, cols, dev), axis=0)
        d2 = float(delta_host[cols[0]]) ** 2
        if len(centres) == 0:
            energy.append(xp.zeros(ms, dtype=q_sparse.dtype, device=dev))
            if virial:
                vir.append(xp.zeros((9, ms), dtype=q_sparse.dtype, device=dev))
            continue
        dots = xp.take(features, _on(xp, centres, dev), axis=0) @ qs.T  # (n_z, Ms)
        energy.append(d2 * xp.sum(dots**zeta, axis=0))
        if not virial:
            continue
        g = (d2 * zeta) * dots ** (zeta - 1)  # (n_z, Ms)
        if virial:
            dqde = _on(xp, desc.dq_dstrain[centres].reshape(9 * len(centres), -1), dev)
            u = xp.reshape(dqde @ qs.T, (len(centres), 9, ms))
            vir.append(xp.sum(g[:, None, :] * u, axis=0))
    out = (
        {"energy": _join_columns(xp, energy, order, dev)}
        if energy
        else {"energy": xp.zeros(len(order), dtype=q_sparse.dtype, device=dev)}
    )
    if forces:
        ends, rows = pair_force_rows(
            desc.features,
            desc.numbers,
            desc.centre,
            desc.neighbour,
            desc.dq_dr,
            q_sparse,
            sparse_numbers,
            delta,
            zeta,
        )
        if len(ends) != n_atoms:  # atoms no pair ends on have zero rows
            rows = index_add(xp, _on(xp, ends, dev), rows, n_atoms)
        out["forces"] = rows
    if virial:
        v9 = _join_columns(xp, vir, order, dev)
        a = _on(xp, np.array(_VOIGT), dev)
        b = _on(xp, np.array(_VOIGT_T), dev)
        out["virial"] = 0.5 * (xp.take(v9, a, axis=0) + xp.take(v9, b, axis=0))
    return out


def pair_force_rows(
    features, numbers: np.ndarray, centre, neighbour, dq_dr, q_sparse, sparse_numbers, delta, zeta
):
    """Force rows of K_NM from a list of derivative pairs, for the atoms they end on.

    ``K_F[j, b, m] = -sum_(i,j) g_im (dq_i/dr_j[b] . q_m)`` over the pairs
    ``(centre, neighbour)`` given: all pairs of a structure (as in
    :func:`design_rows`) or a subset, e.g. those ending on a block of atoms or
    starting at a chunk of centres.

    Parameters
    ----------
    features : ndarray of shape (n_centres, n_features)
        Normalised descriptors of the centres (host).
    numbers : ndarray of shape (n_centres,)
    centre, neighbour : ndarray of shape (n_pairs,)
        Each pair's centre (a row of ``features``) and the atom it ends on.
    dq_dr : ndarray of shape (n_pairs, 3, n_features)
    q_sparse, sparse_numbers, delta, zeta
        As in :func:`design_rows`.

    Returns
    -------
    atoms : ndarray of int
        The distinct ``neighbour`` values, sorted.
    rows : array of shape (len(atoms), 3, M)
        In the namespace of ``q_sparse``.
    """
    xp = namespace(q_sparse)
    dev = array_api_compat.device(q_sparse)
    delta_host = to_numpy(delta)
    ends, local = np.unique(neighbour, return_inverse=True)
    n_out = len(ends)
    blocks, order = _species_blocks(sparse_numbers, numbers)
    feats = _on(xp, features, dev)
    pair_species = numbers[centre]
    parts = []
    for z, cols, centres in blocks:
        ms = len(cols)
        acc = xp.zeros((n_out, 3, ms), dtype=q_sparse.dtype, device=dev)
        if len(centres) == 0:
            parts.append(acc)
            continue
        qs = xp.take(q_sparse, _on(xp, cols, dev), axis=0)
        d2 = float(delta_host[cols[0]]) ** 2
        g = (d2 * zeta) * (xp.take(feats, _on(xp, centres, dev), axis=0) @ qs.T) ** (zeta - 1)
        row_of = np.full(len(numbers), -1)
        row_of[centres] = np.arange(len(centres))
        pairs = np.flatnonzero(pair_species == z)
        for start in range(0, len(pairs), PAIR_CHUNK):
            p = pairs[start : start + PAIR_CHUNK]
            # one GEMM (P * 3, D) @ (D, Ms); a 3-D operand would be P small products
            flat = _on(xp, dq_dr[p].reshape(3 * len(p), -1), dev)
            t = xp.reshape(flat @ qs.T, (len(p), 3, ms))
            t = t * xp.take(g, _on(xp, row_of[centre[p]], dev), axis=0)[:, None, :]
            acc = acc + index_add(xp, _on(xp, local[p], dev), t, n_out)
        parts.append(-acc)
    if not parts:
        return ends, xp.zeros((n_out, 3, len(order)), dtype=q_sparse.dtype, device=dev)
    return ends, _join_columns(xp, parts, order, dev)


def predict_structure(
    desc: StructureDescriptor,
    q_sparse,
    sparse_numbers,
    weights,
    zeta: int,
    *,
    forces: bool = True,
    virial: bool = True,
    n_atoms: int | None = None,
) -> dict:
    """Local energies, forces and virial of one structure (or of some centres).

    Parameters
    ----------
    desc : StructureDescriptor
    q_sparse : array of shape (M, n_features)
        Any array-API namespace; the results are in the same one.
    sparse_numbers : array of shape (M,)
    weights : array of shape (M,)
        ``alpha_m * delta_m**2`` so that ``eps_i = sum_m w_m (q_i . q_m)^zeta``.
    zeta : int
    n_atoms : int, optional
        Atoms of the whole structure, when ``desc`` holds a subset of the
        centres: forces then hold those centres' contributions to all atoms.

    Returns
    -------
    dict
        ``"energies"``: local energies of the centres in eV (without e0);
        ``"forces"``: (n_atoms, 3) in eV/Å; ``"virial"``: (3, 3), ``V * stress``
        in eV (ASE sign).
    """
    xp = namespace(q_sparse)
    dev = array_api_compat.device(q_sparse)
    n_atoms = len(desc.numbers) if n_atoms is None else n_atoms
    energies, grad = local_energy_gradients(
        desc.features,
        desc.numbers,
        q_sparse,
        sparse_numbers,
        weights,
        zeta,
        gradient=forces or virial,
    )
    out = {"energies": energies}
    if forces:
        w_pairs = xp.take(grad, _on(xp, desc.centre, dev), axis=0)
        per_pair = xp.vecdot(_on(xp, desc.dq_dr, dev), w_pairs[:, None, :], axis=-1)  # (P, 3)
        out["forces"] = -index_add(xp, _on(xp, desc.neighbour, dev), per_pair, n_atoms)
    if virial:
        out["virial"] = xp.tensordot(_on(xp, desc.dq_dstrain, dev), grad, axes=([0, 3], [0, 1]))
    return out
