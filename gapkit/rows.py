"""Observations of the sparse GP: the noise model, design-matrix rows, block folding.

Everything that turns labelled structures into whitened least-squares rows
lives here, so that ``fit``, ``partial_fit``, :class:`~gapkit.active.IncrementalGAP`,
pool selection and the Dask workers share one implementation:

- :class:`NoiseModel` gives the noise of every observation of a structure
  (GAP's convention: energy and virial sigmas per atom times ``sqrt(N)``,
  force sigmas per component), with ``config_type`` and per-structure
  overrides; each row carries a *kind* saying whether its sigma moves with a
  tuned hyperparameter (:data:`KIND_ENERGY`, :data:`KIND_FORCE`,
  :data:`KIND_VIRIAL`) or is fixed by an override (:data:`KIND_FIXED`).
- :func:`structure_rows` computes the rows ``K_NM`` of one structure.
- :func:`fold_rows` whitens rows by their noise and folds them, in blocks of
  :data:`ROWS_PER_BLOCK`, into a :class:`~gapkit.gp.StreamingQR`: one loop for
  every caller, so that the blocking (and hence the rounding) is the same.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
from ase import Atoms
from joblib import Parallel, delayed

from ._validation import Labels
from .backend import Backend, namespace
from .descriptors import StructureDescriptor
from .design import design_rows
from .exceptions import InvalidParameterError

__all__ = [
    "KIND_ENERGY",
    "KIND_FORCE",
    "KIND_VIRIAL",
    "KIND_FIXED",
    "SIGMA_OF_KIND",
    "ROWS_PER_BLOCK",
    "NoiseModel",
    "StructureRows",
    "structure_rows",
    "row_prior_variance",
    "compute_rows",
    "rescale_noise",
    "fold_rows",
    "fold_structures",
]

#: Row kinds of the design matrix; rows of KIND_FIXED have a sigma fixed by an override.
KIND_ENERGY, KIND_FORCE, KIND_VIRIAL, KIND_FIXED = 0, 1, 2, -1
#: The hyperparameter each row kind's sigma follows.
SIGMA_OF_KIND = {
    KIND_ENERGY: "sigma_energy",
    KIND_FORCE: "sigma_force",
    KIND_VIRIAL: "sigma_virial",
}
#: Rows of the design matrix gathered before they are folded into the R factor.
ROWS_PER_BLOCK = 8192

_KEYS = ("energy", "force", "virial")


def _positive(value, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if isinstance(value, bool) or not (np.isfinite(x) and x > 0):
        raise InvalidParameterError(f"{where} must be a positive finite number; got {value!r}.")
    return x


@dataclass(frozen=True)
class NoiseModel:
    """Noise standard deviations of the observations.

    Parameters
    ----------
    sigma_energy, sigma_force, sigma_virial : float
        Default noise: eV per atom (times ``sqrt(N)``), eV/Å per component,
        eV per atom of the virial (times ``sqrt(N)``).
    config_type_sigma : mapping, default=None
        ``{config_type: {"energy"|"force"|"virial": sigma}}`` overrides.
    """

    sigma_energy: float
    sigma_force: float
    sigma_virial: float
    config_type_sigma: Mapping | None = field(default=None)

    def __post_init__(self):
        for name in ("sigma_energy", "sigma_force", "sigma_virial"):
            object.__setattr__(self, name, _positive(getattr(self, name), f"'{name}'"))
        if self.config_type_sigma is not None:
            table = {}
            if not isinstance(self.config_type_sigma, Mapping):
                raise InvalidParameterError(
                    "'config_type_sigma' must be a dict {config_type: {'energy'|'force'|"
                    f"'virial': sigma}}; got {self.config_type_sigma!r}."
                )
            for ct, entry in self.config_type_sigma.items():
                if not isinstance(entry, Mapping) or set(entry) - set(_KEYS):
                    raise InvalidParameterError(
                        f"'config_type_sigma'[{ct!r}] must be a dict with keys from "
                        f"{list(_KEYS)}; got {entry!r}."
                    )
                table[str(ct)] = {
                    k: _positive(v, f"config_type_sigma[{ct!r}][{k!r}]") for k, v in entry.items()
                }
            object.__setattr__(self, "config_type_sigma", table)

    @property
    def defaults(self) -> dict[str, float]:
        """The three default sigmas, keyed by hyperparameter name."""
        return {
            "sigma_energy": self.sigma_energy,
            "sigma_force": self.sigma_force,
            "sigma_virial": self.sigma_virial,
        }

    def with_defaults(self, **sigmas: float) -> NoiseModel:
        """The same overrides with other default sigmas."""
        return replace(self, **sigmas)

    def sigmas(self, atoms: Atoms, index: int | None = None) -> dict:
        """Noise of the energy, the force components and the virial of a structure.

        Returns
        -------
        dict
            ``energy`` and ``virial`` (eV, already times ``sqrt(N)``),
            ``force`` (n_atoms, 3) in eV/Å, and ``default``: for each of the
            three, whether it is the default sigma (moves with it when tuned).
        """
        where = "the structure" if index is None else f"structure {index}"
        sig = {k: getattr(self, f"sigma_{k}") for k in _KEYS}
        default = dict.fromkeys(_KEYS, True)
        ct = atoms.info.get("config_type")
        # extxyz gives config_type=5 as an int; JSON and TOML keys are strings
        ct = None if ct is None else str(ct)
        if self.config_type_sigma and ct in self.config_type_sigma:
            sig.update(self.config_type_sigma[ct])
            default.update(dict.fromkeys(self.config_type_sigma[ct], False))
        for key in _KEYS:
            if f"{key}_sigma" in atoms.info:
                sig[key] = _positive(
                    atoms.info[f"{key}_sigma"], f"{where}: info[{key + '_sigma'!r}]"
                )
                default[key] = False
        force = np.full((len(atoms), 3), sig["force"])
        if "force_atom_sigma" in atoms.arrays:
            try:
                per_atom = np.asarray(atoms.arrays["force_atom_sigma"], dtype=float).reshape(-1)
            except (TypeError, ValueError):
                per_atom = np.full(1, np.nan)
            if per_atom.shape != (len(atoms),) or not np.all(
                np.isfinite(per_atom) & (per_atom > 0)
            ):
                raise InvalidParameterError(
                    f"{where}: arrays['force_atom_sigma'] must hold one positive finite "
                    f"number per atom ({len(atoms)}); got {per_atom[:5].tolist()}..."
                )
            force = np.repeat(per_atom, 3).reshape(-1, 3)
            default["force"] = False
        root_n = np.sqrt(len(atoms))
        return {
            "energy": sig["energy"] * root_n,
            "force": force,
            "virial": sig["virial"] * root_n,
            "default": default,
        }


class StructureRows(NamedTuple):
    """Design-matrix rows of one structure at given sparse points."""

    rows: object  # (n, M) unwhitened K_NM, in the namespace of the sparse points
    targets: np.ndarray  # (n,) labels (energy minus e0, forces, virial)
    sigma: np.ndarray  # (n,) noise of each row
    kind: np.ndarray  # (n,) KIND_* of each row
    counts: dict  # energy, forces and virial observations
    #: (n, n_species) prior variance of each row per species at delta = 1 (for
    #: the DTC variance of held-out rows), or None when not asked for
    prior: np.ndarray | None = None


def row_prior_variance(desc: StructureDescriptor, zeta: int, species, has: dict) -> np.ndarray:
    """Prior variance ``k**`` of each row of a structure, one column per species.

    Column ``s`` is the variance the rows would have with ``delta = 1`` for
    species ``species[s]`` and 0 for the others, so that at any ``delta`` the
    prior variance of the rows is ``parts @ delta_species**2``.

    Parameters
    ----------
    desc : StructureDescriptor
        With derivatives when forces or the virial are labelled.
    species : sequence of int
        Atomic numbers, one per column.
    has : dict
        ``energy``, ``forces``, ``virial``: whether the rows include them (in
        that order, as :func:`structure_rows` stacks them).
    """
    from . import uncertainty

    n_atoms = len(desc.numbers)
    n_rows = int(has["energy"]) + 3 * n_atoms * int(has["forces"]) + 6 * int(has["virial"])
    parts = np.zeros((n_rows, len(species)))
    present = set(desc.numbers.tolist())
    for col, z in enumerate(species):
        if int(z) not in present:
            continue
        delta = {int(x): float(x == z) for x in present}
        block = []
        if has["energy"]:
            _, total = uncertainty.energy_prior_variance(desc.features, desc.numbers, zeta, delta)
            block.append(np.atleast_1d(float(total)))
        if has["forces"]:
            block.append(np.ravel(uncertainty.force_prior_variance(desc, zeta, delta)))
        if has["virial"]:
            block.append(np.ravel(uncertainty.virial_prior_variance(desc, zeta, delta)))
        parts[:, col] = np.concatenate(block)
    return parts


def structure_rows(
    descriptor,
    atoms: Atoms,
    labels: Labels,
    sigmas: dict,
    e0: Mapping,
    q_sparse,
    z_sparse,
    delta,
    zeta: int,
    *,
    desc: StructureDescriptor | None = None,
    prior: bool = False,
) -> StructureRows:
    """Design-matrix rows of one structure (runs in a worker).

    Parameters
    ----------
    descriptor : SOAP
        Computes the descriptor (and derivatives where forces or stress are
        labelled); not used when ``desc`` is given.
    atoms : ase.Atoms
    labels : Labels
        Energy (eV), forces (eV/Å), stress (eV/Å³), baseline already subtracted.
    sigmas : dict
        :meth:`NoiseModel.sigmas` of the structure.
    e0 : mapping of str to float
        Energy per isolated atom, subtracted from the energy label.
    q_sparse, z_sparse, delta, zeta
        Sparse features (any array namespace), their atomic numbers (host),
        energy scale per sparse point and the kernel exponent.
    desc : StructureDescriptor, optional
        A descriptor computed earlier (with derivatives if needed).
    prior : bool, default=False
        Also the prior variance of every row per species
        (:func:`row_prior_variance`), for cross-validated std scales.

    Returns
    -------
    StructureRows
    """
    need_f = labels.forces is not None
    need_v = labels.stress is not None
    if desc is None:
        desc = (
            descriptor.features_and_derivatives(atoms)
            if (need_f or need_v)
            else StructureDescriptor(descriptor.features(atoms), atoms.numbers.copy())
        )
    rows = design_rows(desc, q_sparse, z_sparse, delta, zeta, forces=need_f, virial=need_v)
    xp = namespace(q_sparse)
    default = sigmas["default"]
    parts = []  # (rows, targets, sigma, kind)
    counts = {"energy": 0, "forces": 0, "virial": 0}
    if labels.energy is not None:
        e_ref = labels.energy - sum(e0[s] for s in atoms.get_chemical_symbols())
        kind = KIND_ENERGY if default["energy"] else KIND_FIXED
        parts.append((xp.reshape(rows["energy"], (1, -1)), [e_ref], [sigmas["energy"]], [kind]))
        counts["energy"] = 1
    if need_f:
        n = labels.forces.size
        kind = KIND_FORCE if default["force"] else KIND_FIXED
        parts.append(
            (
                xp.reshape(rows["forces"], (n, -1)),
                labels.forces.ravel(),
                sigmas["force"].ravel(),
                np.full(n, kind),
            )
        )
        counts["forces"] = n
    if need_v:
        kind = KIND_VIRIAL if default["virial"] else KIND_FIXED
        parts.append(
            (
                rows["virial"],
                labels.stress * atoms.get_volume(),
                np.full(6, sigmas["virial"]),
                np.full(6, kind),
            )
        )
        counts["virial"] = 6
    parts_prior = None
    if prior:
        has = {"energy": bool(counts["energy"]), "forces": need_f, "virial": need_v}
        parts_prior = row_prior_variance(desc, zeta, np.unique(np.asarray(z_sparse)), has)
    return StructureRows(
        xp.concat([p[0] for p in parts], axis=0),
        np.concatenate([np.asarray(p[1], float) for p in parts]),
        np.concatenate([np.asarray(p[2], float) for p in parts]),
        np.concatenate([np.asarray(p[3], int) for p in parts]),
        counts,
        parts_prior,
    )


def compute_rows(
    descriptor,
    frames: Sequence[Atoms],
    labels: Sequence[Labels],
    noise: NoiseModel,
    e0: Mapping,
    q_sparse,
    z_sparse,
    delta,
    zeta: int,
    *,
    backend: Backend,
    n_jobs: int | None = 1,
    progress=None,
    prior: Sequence[bool] | None = None,
):
    """:func:`structure_rows` of every structure, in order (a generator).

    Runs on ``n_jobs`` joblib processes for NumPy arrays; in this process for
    a single structure or device arrays (which stay here). ``q_sparse`` and
    ``delta`` are moved to ``backend`` here. ``prior`` says, per structure,
    whether to compute the prior variance of its rows as well.
    """
    q_d, delta_d = backend.asarray(q_sparse), backend.asarray(delta)
    prior = [False] * len(frames) if prior is None else prior
    jobs = (
        delayed(structure_rows)(
            descriptor,
            a,
            lab,
            noise.sigmas(a, k),
            e0,
            q_d,
            z_sparse,
            delta_d,
            zeta,
            prior=bool(prior[k]),
        )
        for k, (a, lab) in enumerate(zip(frames, labels, strict=True))
    )
    in_process = len(frames) <= 1 or not backend.is_numpy
    results = Parallel(n_jobs=1 if in_process else (n_jobs or 1), return_as="generator")(jobs)
    return results if progress is None else progress(results, len(frames))


def rescale_noise(
    sigma: np.ndarray, kind: np.ndarray, reference: Mapping, fitted: Mapping
) -> np.ndarray:
    """Noise of rows computed at ``reference`` default sigmas, at ``fitted`` ones."""
    out = sigma
    for k, name in SIGMA_OF_KIND.items():
        factor = fitted[name] / reference[name]
        if factor != 1.0:
            out = np.where(kind == k, out * factor, out)
    return out


def fold_rows(
    solver,
    items: Iterable[tuple],
    backend: Backend,
    *,
    column_scale=None,
    rows_per_block: float | None = None,
) -> tuple[int, float]:
    """Whiten rows by their noise and fold them into ``solver`` in blocks.

    Parameters
    ----------
    solver : StreamingQR
    items : iterable of (rows, targets, sigma)
        Unwhitened rows (n, M) in ``backend``'s namespace, host targets and noise.
    backend : Backend
    column_scale : array of shape (M,), optional
        Factor per column (a change of ``delta`` after the rows were computed).
    rows_per_block : int, default=None
        Rows gathered before a fold (:data:`ROWS_PER_BLOCK` when None).

    Returns
    -------
    n_rows : int
        Rows folded.
    sum_log_sigma : float
        ``sum log sigma`` over them (for the log marginal likelihood).
    """
    xp = backend.xp
    rows_per_block = ROWS_PER_BLOCK if rows_per_block is None else rows_per_block
    scale = None if column_scale is None else backend.asarray(column_scale)[None, :]
    block, n_block, n_rows, sum_log = [], 0, 0, 0.0
    for rows, targets, sigma in items:
        if scale is not None:
            rows = rows * scale
        block.append((rows / backend.asarray(sigma)[:, None], backend.asarray(targets / sigma)))
        n_block += len(sigma)
        n_rows += len(sigma)
        sum_log += float(np.sum(np.log(sigma)))
        if n_block >= rows_per_block:
            solver.add_rows(
                xp.concat([b[0] for b in block], axis=0), xp.concat([b[1] for b in block])
            )
            block, n_block = [], 0
    if block:
        solver.add_rows(xp.concat([b[0] for b in block], axis=0), xp.concat([b[1] for b in block]))
    return n_rows, sum_log


def fold_structures(
    solver, structures: Iterable[StructureRows], backend: Backend, counts: dict, **kwargs
) -> tuple[int, float]:
    """:func:`fold_rows` of :class:`StructureRows`, adding their observation
    counts to ``counts`` (in place) on the way."""

    def items():
        for r in structures:
            for key in counts:
                counts[key] += r.counts[key]
            yield r.rows, r.targets, r.sigma

    return fold_rows(solver, items(), backend, **kwargs)


def is_positive_number(value) -> bool:
    """True for a finite real number > 0 (not a bool)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
        and value > 0
    )
