"""Standard-deviation scales fitted by cross-validation over the training structures.

The posterior std of a sparse GP is that of its weights given the data and
the hyperparameters; what it leaves out (a kernel that cannot represent the
reference exactly, sigmas set by hand) makes it several times too small on
unseen structures (7.6x for forces on Si). ``fit`` therefore fits one factor
per kind of observation from data the model did not see:

1. the training structures are split into ``k`` folds (a seeded permutation;
   all rows of a structure in the same fold);
2. the rows of each fold are folded into an R factor of their own while the
   fit folds them anyway, and the fit's factor is their merge;
3. for each fold ``f`` the model without it is the fit's factor downdated by
   fold ``f``'s (:meth:`~gapkit.gp.StreamingQR.without`, O(M^3)), with the
   *same sparse points*: no descriptor or kernel is computed again;
4. that model predicts the held-out rows (rows kept while fitting, up to
   :data:`MAX_HELD_OUT_ELEMENTS`) with the std in the model's variance form,
   ``z = (prediction - label) / std``;
5. the scale of each kind (``energy``, ``forces``, ``stress``) is the maximum
   likelihood factor of Gaussian errors, ``s^2 = mean(z^2)``.

A kind without held-out labels borrows the scale of forces (else energies).
The energy scale also applies to per-atom (local) energies, which have no
labels of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import uncertainty
from .backend import Backend, to_numpy
from .exceptions import InvalidParameterError
from .gp import StreamingQR
from .rows import ROWS_PER_BLOCK, StructureRows, fold_rows

__all__ = [
    "KINDS",
    "DEFAULT_FOLDS",
    "MAX_HELD_OUT_ELEMENTS",
    "HeldOut",
    "n_folds_for",
    "assign_folds",
    "held_out_mask",
    "unit_scales",
    "check_scales",
    "FoldedRows",
    "cross_validated_scales",
]

#: Kinds of predictions with a std scale of their own.
KINDS = ("energy", "forces", "stress")
#: Folds of the default cross-validation.
DEFAULT_FOLDS = 5
#: Elements of the held-out rows kept while fitting (128 MiB of float64):
#: beyond it, a seeded sample of the structures is held out for the scales.
MAX_HELD_OUT_ELEMENTS = 2**24
#: Which kind each observation of :class:`~gapkit.rows.StructureRows` is.
_COUNT_KIND = {"energy": "energy", "forces": "forces", "virial": "stress"}


def unit_scales() -> dict[str, float]:
    """Scales of an uncalibrated model (all 1)."""
    return dict.fromkeys(KINDS, 1.0)


def check_scales(value, where: str) -> dict[str, float]:
    """``std_scale`` as a dict per kind: one positive number (all kinds) or a mapping.

    Raises
    ------
    InvalidParameterError
        A missing kind, an unknown one or a scale that is not a positive finite number.
    """
    if isinstance(value, Mapping):
        if set(value) != set(KINDS):
            raise InvalidParameterError(
                f"{where}: 'std_scale' must have the keys {list(KINDS)}; got {sorted(value)}."
            )
        scales = dict(value)
    else:
        scales = dict.fromkeys(KINDS, value)
    out = {}
    for kind in KINDS:
        x = scales[kind]
        if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
            raise InvalidParameterError(
                f"{where}: std_scale[{kind!r}] must be a number; got {x!r}."
            )
        if not (np.isfinite(x) and x > 0):
            raise InvalidParameterError(
                f"{where}: std_scale[{kind!r}] must be positive and finite; got {x!r}."
            )
        out[kind] = float(x)
    return out


def n_folds_for(cv, n_structures: int) -> int:
    """Folds of the cross-validated scales for ``cv`` (the estimator's parameter)
    and a number of structures: 0 (none) for ``cv`` None or 1, or fewer than two
    structures; at most one fold per structure."""
    if cv is None or cv < 2 or n_structures < 2:
        return 0
    return min(int(cv), n_structures)


def assign_folds(n_structures: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every structure: a seeded permutation dealt round-robin (sizes differ by <= 1)."""
    order = np.random.default_rng(seed).permutation(n_structures)
    folds = np.empty(n_structures, dtype=int)
    folds[order] = np.arange(n_structures) % n_folds
    return folds


def held_out_mask(
    row_counts: Sequence[int], n_columns: int, seed: int, max_elements: int = MAX_HELD_OUT_ELEMENTS
) -> np.ndarray:
    """Which structures keep their rows for the scales: all when they fit in
    ``max_elements``, else a seeded random sample that does (at least one)."""
    counts = np.asarray(row_counts, dtype=np.int64)
    keep = np.zeros(len(counts), dtype=bool)
    budget = max_elements // max(n_columns, 1)
    if counts.sum() <= budget:
        keep[:] = True
        return keep
    total = 0
    for k in np.random.default_rng(seed + 1).permutation(len(counts)):
        if total + counts[k] > budget and keep.any():
            continue
        keep[k] = True
        total += counts[k]
    return keep


@dataclass(frozen=True)
class HeldOut:
    """Rows of one training structure kept to score the model without its fold."""

    fold: int
    rows: StructureRows  # unwhitened rows (with the prior per species for DTC)


class FoldedRows:
    """Rows of every structure folded into one R factor per fold (and held-out rows kept).

    Parameters
    ----------
    solver : StreamingQR
        The fit's accumulator (holding the prior rows); every fold's factor is
        made with :meth:`~gapkit.gp.StreamingQR.empty_like` and merged into it
        by :meth:`merge_into`.
    folds : ndarray of shape (n_structures,)
        Fold of each structure.
    keep : ndarray of bool, shape (n_structures,)
        Structures whose rows are held on to for the scales.
    """

    def __init__(self, solver: StreamingQR, folds: np.ndarray, keep: np.ndarray):
        self.parts = [solver.empty_like() for _ in range(int(folds.max()) + 1)]
        self.folds = folds
        self.keep = keep
        self.held: list[HeldOut] = []

    def fold(
        self,
        structures: Iterable[StructureRows],
        backend: Backend,
        counts: dict,
        *,
        column_scale=None,
        sigma_of=None,
    ) -> tuple[int, float]:
        """Fold the rows of every structure (in order) into its fold's factor.

        ``sigma_of(rows)`` gives the noise of a structure's rows (their own when
        None); ``counts`` is updated in place. Returns the rows folded and
        ``sum log sigma``.
        """
        buffers = [[] for _ in self.parts]
        sizes = [0] * len(self.parts)
        n_rows, sum_log = 0, 0.0

        def flush(f):
            nonlocal n_rows, sum_log
            n, s = fold_rows(
                self.parts[f], buffers[f], backend, column_scale=column_scale, rows_per_block=np.inf
            )
            n_rows += n
            sum_log += s
            buffers[f], sizes[f] = [], 0

        for k, r in enumerate(structures):
            for key in counts:
                counts[key] += r.counts[key]
            f = int(self.folds[k])
            sigma = r.sigma if sigma_of is None else sigma_of(r)
            buffers[f].append((r.rows, r.targets, sigma))
            sizes[f] += len(sigma)
            if self.keep[k]:
                self.held.append(HeldOut(f, r))
            if sizes[f] >= ROWS_PER_BLOCK:
                flush(f)
        for f in range(len(self.parts)):
            if buffers[f]:
                flush(f)
        return n_rows, sum_log

    def merge_into(self, solver: StreamingQR) -> None:
        """Merge every fold's factor into the fit's accumulator."""
        for part in self.parts:
            solver.merge(part)


def _observation_kinds(r: StructureRows) -> np.ndarray:
    return np.concatenate(
        [np.full(r.counts[c], KINDS.index(k)) for c, k in _COUNT_KIND.items() if r.counts[c]]
        or [np.zeros(0, int)]
    )


def cross_validated_scales(
    solver: StreamingQR,
    parts: Sequence[StreamingQR],
    held: Sequence[HeldOut],
    *,
    l_factor,
    delta_species: np.ndarray,
    variance: str,
    backend: Backend,
    column_scale=None,
) -> tuple[dict[str, float], dict]:
    """Std scales from the held-out rows scored by the models without their fold.

    Parameters
    ----------
    solver : StreamingQR
        The fit's accumulator (all folds merged, prior rows included).
    parts : list of StreamingQR
        The rows of each fold alone.
    held : list of HeldOut
        Rows to score, with their fold.
    l_factor : array of shape (M, M)
        Cholesky factor of ``K_MM + jitter`` (for the DTC Nyström term).
    delta_species : ndarray of shape (n_species,)
        ``delta`` of the species in the columns of the rows' prior parts.
    variance : {"dtc", "sor"}
    column_scale : array of shape (M,), optional
        Factor per column of the held-out rows (a ``delta`` changed since they
        were computed).

    Returns
    -------
    scales : dict
        ``energy``, ``forces``, ``stress``.
    info : dict
        ``method`` ("cross-validation"), ``n_folds``, ``n_held_out`` per kind
        and ``borrowed`` (kinds without held-out labels and whose scale they took).
    """
    xp = backend.xp
    scale = None if column_scale is None else backend.asarray(column_scale)[None, :]
    l_d = backend.asarray(l_factor)
    d2 = np.asarray(delta_species, float) ** 2
    z2 = {k: [] for k in KINDS}
    for f, part in enumerate(parts):
        mine = [h.rows for h in held if h.fold == f]
        if not mine or part.n_rows == 0:
            continue
        without = solver.without(part)
        alpha = without.solve()
        r_factor = without.r
        rows = xp.concat([r.rows for r in mine], axis=0)
        if scale is not None:
            rows = rows * scale
        targets = np.concatenate([r.targets for r in mine])
        kinds = np.concatenate([_observation_kinds(r) for r in mine])
        pred = to_numpy(rows @ alpha)
        var = to_numpy(uncertainty.sor_variance(rows, r_factor))
        if variance == "dtc":
            prior = np.concatenate([r.prior for r in mine]) @ d2
            var = var + prior - to_numpy(uncertainty.nystrom_variance(rows, l_d))
        std = np.sqrt(np.clip(var, np.finfo(float).tiny, None))
        z = (pred - targets) / std
        for i, kind in enumerate(KINDS):
            z2[kind].append(z[kinds == i] ** 2)
    measured = {k: np.concatenate(v) for k, v in z2.items() if v and sum(len(x) for x in v)}
    scales = {k: float(np.sqrt(np.mean(v))) for k, v in measured.items()}
    borrowed = {}
    for kind in KINDS:
        if kind not in scales:
            source = next((k for k in ("forces", "energy", "stress") if k in measured), None)
            borrowed[kind] = source
            scales[kind] = 1.0 if source is None else scales[source]
    info = {
        "method": "cross-validation" if measured else "none",
        "n_folds": len(parts),
        "n_held_out": {k: int(len(measured.get(k, ()))) for k in KINDS},
        "borrowed": borrowed,
    }
    return scales, info


#: The label attribute (:class:`~gapkit._validation.Labels`) and result key of each kind.
_LABEL_OF = {k: (k, k) for k in KINDS}


def validation_scales(fitted, frames, labels, on, run: dict, owner: str):
    """``fitted`` with the std scales of the kinds labelled in ``frames`` (or
    those in ``on``) fitted on them: ``s^2 = mean((error / std)^2)`` of the
    unscaled stds.

    Raises
    ------
    InvalidParameterError
        ``on`` names an unknown kind.
    MissingLabelError
        No labels of a kind asked for, or errors that give no scale.
    """
    from .exceptions import MissingLabelError

    wanted = list(KINDS) if on is None else [on] if isinstance(on, str) else list(on)
    wanted = ["energy" if k == "energies" else k for k in wanted]
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise InvalidParameterError(
            f"{owner}: 'on' must name kinds from {list(KINDS)}; got {unknown}."
        )
    results = fitted.replace(std_scale=unit_scales()).predict(
        frames, forces="forces" in wanted, stress="stress" in wanted, std=True, **run
    )
    scales, counts = dict(fitted.std_scale), {}
    for kind in wanted:
        attr, key = _LABEL_OF[kind]
        pairs = [
            (np.ravel(r[key] - getattr(lab, attr)), np.ravel(r[f"{key}_std"]))
            for r, lab in zip(results, labels, strict=True)
            if getattr(lab, attr) is not None and key in r
        ]
        if not pairs:
            if on is None:
                continue
            raise MissingLabelError(f"{owner}: no {kind} labels to calibrate on.")
        errors, stds = (np.concatenate(x) for x in zip(*pairs, strict=True))
        z = errors / np.maximum(stds, np.finfo(float).tiny)
        scale = float(np.sqrt(np.mean(z**2)))
        if not (np.isfinite(scale) and scale > 0):
            raise MissingLabelError(
                f"{owner}: the {kind} errors give no scale ({scale}): are the labels "
                "the model's own predictions?"
            )
        scales[kind], counts[kind] = scale, int(errors.size)
    if not counts:
        raise MissingLabelError(f"{owner}: the structures carry no labels to calibrate on.")
    info = {"method": "validation", "n_held_out": counts, "kept": sorted(set(KINDS) - set(counts))}
    return fitted.replace(std_scale=scales, calibration=info)
