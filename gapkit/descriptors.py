"""SOAP descriptor: DScribe's GTO power spectrum, normalised, with sparse derivatives.

DScribe defines the descriptor (radial basis, layout); two engines evaluate it.
``engine="numba"`` (default) computes the closed-form GTO expansion of every
neighbour pair in compiled loops (:mod:`gapkit._soap_gto`): descriptors,
derivatives per pair, or the derivatives already contracted with the gradient
of a local-energy model, the path molecular dynamics takes (~20x faster than
DScribe's analytical derivative). ``engine="dscribe"`` calls DScribe itself and
is kept as the reference the numba engine is tested against (1e-10).

Periodic cells: DScribe has analytical derivatives only for non-periodic
input. For each centre atom the DScribe engine cuts a non-periodic cluster of
all atoms (periodic images included) within ``r_cut + padding`` of it, calls
DScribe's analytical derivative on that cluster with the centre attached to
its atom, and folds the images' derivatives back onto the atoms they are
images of. The numba engine works on the same pair list directly.

Smoothness: neighbours beyond ``r_cut + padding`` are dropped, where the
padding is ``sigma * sqrt(-2 ln t)``; DScribe's own threshold ``t = 1e-3``
makes the descriptor jump by ~1e-4 relative when a neighbour crosses that
sphere, which breaks energy conservation in MD. gapkit keeps the unweighted
GTO basis and lowers the threshold to ``cutoff_tolerance`` (default 1e-10),
so the jump is below 1e-10 relative.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from dscribe.descriptors import SOAP as _DScribeSOAP
from sklearn.base import BaseEstimator

from ._soap_gto import GTOBasis
from .exceptions import InvalidParameterError, UnknownSpeciesError
from .neighbours import neighbour_pairs

__all__ = ["SOAP", "StructureDescriptor"]


class _PaddedSOAP(_DScribeSOAP):
    """DScribe's SOAP with a neighbour padding set by a tolerance of our choice."""

    def __init__(self, *args, cutoff_tolerance: float = 1e-10, **kwargs):
        self._cutoff_tolerance = cutoff_tolerance
        super().__init__(*args, **kwargs)

    def get_cutoff_padding(self) -> float:
        return neighbour_cutoff(self._r_cut, self._sigma, self._cutoff_tolerance) - self._r_cut


def neighbour_cutoff(r_cut: float, sigma: float, tolerance: float) -> float:
    """Distance beyond which a neighbour changes the descriptor by < ``tolerance``.

    Two tails reach past ``r_cut``: the atom's Gaussian, ``exp(-d^2 / 2 sigma^2)``
    (DScribe's own padding, ``sigma sqrt(-2 ln t)``), and the widest GTO radial
    function, ``exp(-a r^2)`` with ``a = ln(1e3) / r_cut^2`` (DScribe's choice),
    which the smearing widens to ``exp(-a d^2 / (1 + 2 a sigma^2))``. The cutoff
    is where both have decayed to ``tolerance``.
    """
    log_t = -np.log(tolerance)
    a = np.log(1e3) / r_cut**2
    gaussian = r_cut + sigma * np.sqrt(2.0 * log_t)
    radial = np.sqrt(log_t * (1.0 + 2.0 * a * sigma**2) / a)
    return float(max(gaussian, radial))


class _CentrePairs(NamedTuple):
    """Neighbour pairs of a list of centres, grouped per centre."""

    local: np.ndarray  # position of the pair's centre in the list
    starts: np.ndarray  # (n_centres + 1,) pair range of each centre
    neighbour: np.ndarray  # atom j (periodic images not told apart)
    species: np.ndarray  # species index of j
    centre_species: np.ndarray  # species index of each centre
    vectors: np.ndarray  # r_j - r_i (image included), float64


#: Largest radial cutoff (Å) accepted: beyond it a neighbour list of any dense
#: material holds millions of pairs per atom.
MAX_CUTOFF = 50.0
#: Largest radial basis accepted (the GTO basis set-up is O(n_max^3) in memory).
MAX_N_MAX = 32


@dataclass
class StructureDescriptor:
    """Descriptors of one structure and, optionally, their derivatives.

    Attributes
    ----------
    features : ndarray of shape (n_atoms, n_features)
        Normalised SOAP vectors ``q_i`` (unit length).
    numbers : ndarray of shape (n_atoms,)
        Atomic numbers of the centres.
    centre : ndarray of shape (n_pairs,), optional
        Centre of each derivative pair, as a position in :attr:`features`
        (the atom index when all atoms are centres), sorted.
    neighbour : ndarray of shape (n_pairs,), optional
        Atom ``j`` (images folded back) of each pair; ``j == i`` included.
    dq_dr : ndarray of shape (n_pairs, 3, n_features), optional
        ``d q_i / d r_j`` in 1/Å, summed over the periodic images of ``j``.
    dq_dstrain : ndarray of shape (n_atoms, 3, 3, n_features), optional
        ``sum_j r_ij[a] d q_i / d r_j[b]`` (Å · 1/Å): the derivative of ``q_i``
        with respect to a homogeneous strain, used for the virial.
    """

    features: np.ndarray
    numbers: np.ndarray
    centre: np.ndarray | None = None
    neighbour: np.ndarray | None = None
    dq_dr: np.ndarray | None = None
    dq_dstrain: np.ndarray | None = None


class SOAP(BaseEstimator):
    """Smooth overlap of atomic positions: DScribe's normalised GTO power spectrum.

    Parameters
    ----------
    r_cut : float, default=5.0
        Radial cutoff in Å of the GTO radial basis.
    n_max : int, default=8
        Number of radial basis functions.
    l_max : int, default=6
        Maximum degree of the spherical harmonics.
    sigma : float, default=0.5
        Width in Å of the Gaussian smearing of each atom.
    species : list of str or int, default=None
        Chemical species the descriptor distinguishes. ``None`` lets
        :class:`~gapkit.GAPRegressor` take them from the training data.
    cutoff_tolerance : float, default=1e-10
        Neighbours are included up to the distance where both the atom's
        Gaussian and the widest radial basis function have decayed to this
        fraction (see :func:`neighbour_cutoff`). The smaller, the smoother the
        energy when an atom crosses that sphere, and the more neighbours each
        centre has (DScribe's own padding corresponds to 1e-3 on the Gaussian
        alone).
    engine : {"numba", "dscribe"}, default="numba"
        What evaluates the descriptor: gapkit's compiled closed-form GTO
        expansion, or DScribe itself (the reference; ~20x slower derivatives).
        Both give the same numbers to ~1e-11 relative (for ``sigma`` down to
        0.05 Å; at smaller widths DScribe's analytical derivative loses
        accuracy, while the numba engine still matches finite differences).

    Notes
    -----
    DScribe stores each unordered pair ``(Z n, Z' n')`` of the power spectrum
    once. The off-diagonal entries are multiplied by ``sqrt(2)`` so that the
    dot product of two vectors is the full SOAP kernel
    ``sum_{Z Z' n n' l} p p'``, and each vector is divided by its norm:
    ``q_i = p_i / |p_i|``, with ``dq_i = (I - q_i q_i^T) dp_i / |p_i|``.

    References
    ----------
    A. P. Bartók, R. Kondor, G. Csányi, "On representing chemical
    environments", Phys. Rev. B 87, 184115 (2013).
    L. Himanen et al., "DScribe: Library of descriptors for machine learning
    in materials science", Comput. Phys. Commun. 247, 106949 (2020).

    Examples
    --------
    >>> from ase.build import bulk
    >>> soap = SOAP(r_cut=4.0, n_max=4, l_max=3, species=["Si"])
    >>> soap.features(bulk("Si", cubic=True)).shape
    (8, 40)
    """

    def __init__(
        self,
        r_cut: float = 5.0,
        n_max: int = 8,
        l_max: int = 6,
        sigma: float = 0.5,
        *,
        species: list | None = None,
        cutoff_tolerance: float = 1e-10,
        engine: str = "numba",
    ):
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.species = species
        self.cutoff_tolerance = cutoff_tolerance
        self.engine = engine

    # ------------------------------------------------------------------ setup
    def _validate(self) -> None:
        def bad(name, allowed):
            raise InvalidParameterError(
                f"SOAP: {name!r} must be {allowed}; got {getattr(self, name)!r}."
            )

        def real(x) -> bool:
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and np.isfinite(x)

        if not (real(self.r_cut) and 0 < self.r_cut <= MAX_CUTOFF):
            bad("r_cut", f"a positive number of Å, at most {MAX_CUTOFF:g}")
        if not (isinstance(self.n_max, (int, np.integer)) and 2 <= self.n_max <= MAX_N_MAX):
            bad("n_max", f"an integer between 2 and {MAX_N_MAX}")
        if not (isinstance(self.l_max, (int, np.integer)) and 0 <= self.l_max <= 20):
            bad("l_max", "an integer between 0 and 20")
        if not (real(self.sigma) and 0 < self.sigma <= self.r_cut):
            bad("sigma", "a positive number of Å, at most r_cut")
        if not (real(self.cutoff_tolerance) and 0 < self.cutoff_tolerance < 1):
            bad("cutoff_tolerance", "a number between 0 and 1 (exclusive)")
        if self.engine not in ("numba", "dscribe"):
            bad("engine", "'numba' or 'dscribe'")
        if self.species is None or len(self.species) == 0:
            raise InvalidParameterError(
                "SOAP: 'species' is not set; give a list of elements, or let "
                "GAPRegressor.fit take them from the training data."
            )

    @property
    def species_numbers(self) -> np.ndarray:
        """Sorted atomic numbers of :attr:`species`."""
        numbers = set()
        for s in self.species:
            if isinstance(s, str):
                if s not in atomic_numbers:
                    raise InvalidParameterError(f"SOAP: unknown chemical symbol {s!r} in species.")
                numbers.add(atomic_numbers[s])
            else:
                numbers.add(int(s))
        return np.array(sorted(numbers), dtype=int)

    @property
    def species_symbols(self) -> list[str]:
        """Chemical symbols of :attr:`species`, sorted by atomic number."""
        return [chemical_symbols[z] for z in self.species_numbers]

    def _engine_key(self) -> tuple:
        return (
            float(self.r_cut),
            int(self.n_max),
            int(self.l_max),
            float(self.sigma),
            tuple(self.species_numbers),
            float(self.cutoff_tolerance),
        )

    def _engine(self) -> _DScribeSOAP:
        self._validate()
        key = self._engine_key()
        cached = self.__dict__.get("_engine_cache")
        if cached is None or cached[0] != key:
            engine = _PaddedSOAP(
                species=list(self.species_numbers),
                r_cut=float(self.r_cut),
                n_max=int(self.n_max),
                l_max=int(self.l_max),
                sigma=float(self.sigma),
                rbf="gto",
                periodic=False,
                compression={"mode": "off"},
                sparse=False,
                dtype="float64",
                cutoff_tolerance=float(self.cutoff_tolerance),
            )
            weights = _pair_weights(engine, int(self.n_max), int(self.l_max), self.species_numbers)
            # DScribe has no public accessor for its orthonormalised GTO basis;
            # dscribe is pinned below 3 while these are read (pyproject.toml)
            alphas, betas = engine._alphas, engine._betas  # noqa: SLF001
            basis = GTOBasis(alphas, betas, float(self.sigma), len(key[4]), weights)
            self.__dict__["_engine_cache"] = (key, engine, weights, basis)
            cached = self.__dict__["_engine_cache"]
        return cached[1]

    def _weights(self) -> np.ndarray:
        self._engine()
        return self.__dict__["_engine_cache"][2]

    def _basis(self) -> GTOBasis:
        self._engine()
        return self.__dict__["_engine_cache"][3]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_engine_cache", None)
        return state

    @property
    def neighbour_cutoff(self) -> float:
        """Distance in Å up to which neighbours enter a centre's descriptor."""
        return float(self.r_cut) + float(self._engine().get_cutoff_padding())

    @property
    def n_features(self) -> int:
        """Length of one descriptor vector."""
        return int(self._engine().get_number_of_features())

    # ------------------------------------------------------------ computation
    def _check_species(self, atoms: Atoms) -> None:
        known = set(self.species_numbers.tolist())
        unknown = sorted(set(atoms.numbers.tolist()) - known)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            raise UnknownSpeciesError(
                f"The structure contains {names}, which the descriptor was not set up for "
                f"(species: {', '.join(self.species_symbols)})."
            )

    def neighbour_list(self, atoms: Atoms):
        """Pairs within :attr:`neighbour_cutoff`: centre ``i`` (sorted), atom ``j``
        and the vector ``r_j - r_i`` (images included), for reuse across calls of
        :meth:`features_and_derivatives` on the same structure."""
        i, j, d, _ = neighbour_pairs(atoms, self.neighbour_cutoff)
        return i, j, d

    def features(self, atoms: Atoms) -> np.ndarray:
        """Normalised descriptors of every atom.

        Parameters
        ----------
        atoms : ase.Atoms
            A molecule or a periodic cell (cells smaller than the cutoff too).

        Returns
        -------
        ndarray of shape (n_atoms, n_features)
        """
        n = len(atoms)
        if self.engine == "numba":
            p = self._expand(atoms, np.arange(n), None)[1]
            return p / np.linalg.norm(p, axis=1, keepdims=True)
        engine = self._engine()
        self._check_species(atoms)
        # One non-periodic cluster: the atoms themselves plus every periodic image
        # that is a neighbour of some atom.
        _, j, _, shift = neighbour_pairs(atoms, self.neighbour_cutoff)
        images = np.unique(np.column_stack([j, shift])[np.any(shift != 0, axis=1)], axis=0)
        image_pos = atoms.positions[images[:, 0]] + images[:, 1:] @ atoms.cell.array
        cluster = Atoms(
            numbers=np.concatenate([atoms.numbers, atoms.numbers[images[:, 0]]]),
            positions=np.vstack([atoms.positions, image_pos]),
        )
        p = engine.create(cluster, centers=list(range(n))).reshape(n, -1)
        p = p * self._weights()
        return p / np.linalg.norm(p, axis=1, keepdims=True)

    def features_and_derivatives(
        self, atoms: Atoms, centres: np.ndarray | None = None, neighbours=None
    ) -> StructureDescriptor:
        """Descriptors and their derivatives, stored sparsely per pair.

        Parameters
        ----------
        atoms : ase.Atoms
            A molecule or a periodic cell.
        centres : array of int, optional
            Compute only these centres (all atoms by default); the arrays of
            the result then refer to these centres in this order.
        neighbours : tuple, optional
            The structure's :meth:`neighbour_list`, when already computed.

        Returns
        -------
        StructureDescriptor
            With ``dq_dr`` per (centre, neighbour) pair and ``dq_dstrain``.
        """
        n_feat = len(self._weights())
        if centres is None:
            centres = np.arange(len(atoms))
        centres = np.asarray(centres, dtype=int)
        if self.engine == "numba":
            return self._numba_derivatives(atoms, centres, neighbours)

        q_out = np.empty((len(centres), n_feat))
        strain_out = np.empty((len(centres), 3, 3, n_feat))
        centre_out, neigh_out, dq_out = [], [], []
        for k, (j, rel, p, dp) in enumerate(self._centre_clusters(atoms, centres, neighbours)):
            norm = np.linalg.norm(p)
            q = p / norm
            dq = (dp - np.einsum("kbf,f->kb", dp, q)[:, :, None] * q) / norm
            q_out[k] = q
            strain_out[k] = np.einsum("ka,kbf->abf", rel, dq)
            # Fold periodic images back onto their atoms.
            order = np.argsort(j, kind="stable")
            js = j[order]
            first = np.flatnonzero(np.r_[True, js[1:] != js[:-1]])
            dq_out.append(np.add.reduceat(dq[order], first, axis=0))
            neigh_out.append(js[first])
            centre_out.append(np.full(len(first), k))
        return StructureDescriptor(
            features=q_out,
            numbers=atoms.numbers[centres].copy(),
            centre=np.concatenate(centre_out) if centre_out else np.zeros(0, int),
            neighbour=np.concatenate(neigh_out) if neigh_out else np.zeros(0, int),
            dq_dr=np.concatenate(dq_out) if dq_out else np.zeros((0, 3, n_feat)),
            dq_dstrain=strain_out,
        )

    def _centre_clusters(self, atoms: Atoms, centres: np.ndarray, neighbours=None):
        """Per centre: the atom each cluster member is (an image) of, ``r_j - r_i``,
        and DScribe's weighted, unnormalised descriptor ``p`` and ``dp/dr_j``."""
        engine = self._engine()
        self._check_species(atoms)
        w = self._weights()
        pos = atoms.positions
        numbers = atoms.numbers
        i_all, j_all, d_all = neighbours if neighbours is not None else self.neighbour_list(atoms)
        starts = np.searchsorted(i_all, np.arange(len(atoms) + 1))
        for c in centres:
            sl = slice(starts[c], starts[c + 1])
            j = np.concatenate([[c], j_all[sl]])
            rel = np.vstack([np.zeros((1, 3)), d_all[sl]])
            cluster = Atoms(numbers=numbers[j], positions=pos[c] + rel)
            dp, p = engine.derivatives(
                cluster, centers=[0], attach=True, method="analytical", return_descriptor=True
            )
            yield j, rel, p[0] * w, dp[0] * w  # dp: (n_cluster, 3, F)

    # ------------------------------------------------------- numba engine
    def _pairs_of(self, atoms: Atoms, centres: np.ndarray, neighbours) -> _CentrePairs:
        """The neighbour pairs of ``centres``, grouped per centre in that order."""
        self._check_species(atoms)
        i_all, j_all, d_all = neighbours if neighbours is not None else self.neighbour_list(atoms)
        starts = np.searchsorted(i_all, np.arange(len(atoms) + 1))
        counts = starts[centres + 1] - starts[centres]
        offsets = np.repeat(starts[centres] - np.r_[0, np.cumsum(counts)[:-1]], counts)
        rows = np.arange(counts.sum(), dtype=np.intp) + offsets
        species = np.searchsorted(self.species_numbers, atoms.numbers)
        j = np.asarray(j_all[rows], dtype=np.intp)
        return _CentrePairs(
            local=np.repeat(np.arange(len(centres)), counts),
            starts=np.r_[0, np.cumsum(counts)],
            neighbour=j,
            species=species[j],
            centre_species=species[centres],
            vectors=np.ascontiguousarray(d_all[rows], dtype=float),
        )

    def _expand(self, atoms: Atoms, centres: np.ndarray, neighbours):
        """Density coefficients, weighted power spectrum and pairs of ``centres``."""
        basis = self._basis()
        pairs = self._pairs_of(atoms, centres, neighbours)
        c = basis.expand(pairs.starts, pairs.species, pairs.vectors, pairs.centre_species)
        return c, basis.power_spectrum(c), pairs

    def _numba_derivatives(self, atoms: Atoms, centres: np.ndarray, neighbours):
        n_atoms, n_centres = len(atoms), len(centres)
        c, p, pairs = self._expand(atoms, centres, neighbours)
        norm = np.linalg.norm(p, axis=1)
        q = p / norm[:, None]
        # One row per (centre, atom): periodic images of an atom share it, and
        # each centre has its own row; rows sorted by centre, then atom.
        keys = np.concatenate(
            [pairs.local * n_atoms + pairs.neighbour, np.arange(n_centres) * n_atoms + centres]
        )
        unique, row = np.unique(keys, return_inverse=True)
        n_pairs = len(pairs.local)
        dq, strain = self._basis().normalised_derivatives(
            pairs.starts,
            pairs.species,
            pairs.vectors,
            c,
            q,
            norm,
            row[:n_pairs],
            row[n_pairs:],
            len(unique),
        )
        return StructureDescriptor(
            features=q,
            numbers=atoms.numbers[centres].copy(),
            centre=unique // n_atoms,
            neighbour=unique % n_atoms,
            dq_dr=dq,
            dq_dstrain=strain,
        )

    def _numba_contract(self, atoms: Atoms, gradient, centres: np.ndarray, neighbours):
        n_atoms = len(atoms)
        if len(centres) == 0:
            return np.zeros(0), np.zeros((n_atoms, 3)), np.zeros((3, 3))
        c, p, pairs = self._expand(atoms, centres, neighbours)
        norm = np.linalg.norm(p, axis=1)
        q = p / norm[:, None]
        eps, w = gradient(q, atoms.numbers[centres])
        w = np.asarray(w, dtype=float)
        # d eps / d p for p = |p| q
        dp = (w - np.einsum("if,if->i", q, w)[:, None] * q) / norm[:, None]
        basis = self._basis()
        g = basis.contract(
            pairs.starts, pairs.species, pairs.vectors, basis.coefficient_gradient(c, dp)
        )  # d eps_i / d r_j per pair
        owner = centres[pairs.local]
        forces = np.zeros((n_atoms, 3))
        for b in range(3):
            forces[:, b] = np.bincount(owner, g[:, b], minlength=n_atoms) - np.bincount(
                pairs.neighbour, g[:, b], minlength=n_atoms
            )
        return np.asarray(eps, dtype=float), forces, pairs.vectors.T @ g

    def contract_derivatives(
        self, atoms: Atoms, gradient, centres: np.ndarray | None = None, neighbours=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energies, forces and virial of a local-energy model in one pass.

        The descriptor derivatives of each centre are contracted with the
        gradient of its local energy as they are computed, and never stored:
        the fast path for predictions (the same numbers as
        :meth:`features_and_derivatives` followed by
        :func:`gapkit.design.predict_structure`).

        Parameters
        ----------
        atoms : ase.Atoms
        gradient : callable
            ``gradient(q, numbers) -> (eps, w)``: local energies (n,) and their
            gradients ``w = d eps / d q`` (n, n_features) for normalised
            descriptors ``q`` (n, n_features) of centres of species ``numbers``.
        centres, neighbours
            As in :meth:`features_and_derivatives`.

        Returns
        -------
        eps : ndarray of shape (n_centres,)
        forces : ndarray of shape (n_atoms, 3)
            ``-sum_i w_i . dq_i/dr_j``: those centres' contributions.
        virial : ndarray of shape (3, 3)
            ``sum_i w_i . dq_i/deps_ab`` (``V * stress``, ASE sign, not symmetrised).
        """
        if centres is None:
            centres = np.arange(len(atoms))
        centres = np.asarray(centres, dtype=int)
        if self.engine == "numba":
            return self._numba_contract(atoms, gradient, centres, neighbours)
        n_feat = len(self._weights())
        raw = list(self._centre_clusters(atoms, centres, neighbours))
        if not raw:
            return np.zeros(0), np.zeros((len(atoms), 3)), np.zeros((3, 3))
        p = np.stack([r[2] for r in raw])
        norm = np.linalg.norm(p, axis=1)
        q = p / norm[:, None]
        eps, w = gradient(q, atoms.numbers[centres])
        q_dot_w = np.einsum("if,if->i", q, w)
        virial = np.zeros((3, 3))
        parts, owners = [], []
        for k, (j, rel, _, dp) in enumerate(raw):
            # dq/dr . w with dq = (dp - (dp . q) q) / |p|, in one pass over dp
            both = dp.reshape(-1, n_feat) @ np.column_stack([w[k], q[k]])
            g = ((both[:, 0] - both[:, 1] * q_dot_w[k]) / norm[k]).reshape(-1, 3)
            virial += rel.T @ g
            parts.append(g)
            owners.append(j)
        g = np.concatenate(parts)
        owner = np.concatenate(owners)
        forces = -np.stack(
            [np.bincount(owner, g[:, b], minlength=len(atoms)) for b in range(3)], axis=1
        )
        return np.asarray(eps, dtype=float), forces, virial


def _pair_weights(engine: _DScribeSOAP, n_max: int, l_max: int, numbers: np.ndarray) -> np.ndarray:
    """sqrt(2) on the entries DScribe stores once for two ordered pairs.

    Within a same-species block DScribe's layout is l-major, then the upper
    triangle of (n, n'); a block of two different species is stored once.
    """
    w = np.full(engine.get_number_of_features(), np.sqrt(2.0))
    pairs = [(n, m) for n in range(n_max) for m in range(n, n_max)]
    diagonal = np.array([n == m for n, m in pairs])
    same_block = np.where(np.tile(diagonal, l_max + 1), 1.0, np.sqrt(2.0))
    for z in numbers:
        loc = engine.get_location((int(z), int(z)))
        w[loc] = same_block
    return w
