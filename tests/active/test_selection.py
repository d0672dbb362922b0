"""Pool selection and incremental updates."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from conftest import small_soap

from gapkit import GAPRegressor
from gapkit.active import label_structures, select_batch
from gapkit.exceptions import InvalidParameterError
from gapkit.gp import StreamingQR


def test_partial_fit_equals_solving_from_scratch(cuau_frames):
    first, second = cuau_frames[:6], cuau_frames[6:]
    model = GAPRegressor(small_soap(), n_sparse=30, random_state=0).fit(first)
    updated = GAPRegressor(small_soap(), n_sparse=30, random_state=0).fit(first)
    updated.partial_fit(second)
    # the same sparse points, e0 and hyperparameters, all data folded at once
    frames = first + second
    labels = model._read_training_labels(frames, None)
    solver = StreamingQR(len(model.coefficients_))
    solver.add_rows(model.sparse_cholesky_.T, np.zeros(len(model.coefficients_)))
    for rows, y, sigma, _, _ in model._design_rows_for(frames, labels, "test"):
        solver.add_rows(rows / sigma[:, None], y / sigma)
    np.testing.assert_allclose(updated.coefficients_, solver.solve(), rtol=1e-8, atol=1e-10)
    assert updated.n_observations_["energy"] == len(frames)
    # and it learned: errors on the added data went down
    err = [np.abs(m.predict(second) - [a.get_potential_energy() for a in second]).mean()
           for m in (model, updated)]
    assert err[1] < err[0]


def test_select_batch_prefers_unfamiliar_and_diverse(cuau_model, cuau_frames):
    familiar = cuau_frames[0]
    strange = cuau_frames[1].copy()
    strange.set_cell(strange.cell.array * 0.9, scale_atoms=True)
    other = cuau_frames[2].copy()
    other.set_cell(other.cell.array * 1.08, scale_atoms=True)
    pool = [familiar, strange, strange.copy(), other]
    first = select_batch(cuau_model, pool, 1)
    assert first[0] in (1, 2)
    batch = select_batch(cuau_model, pool, 2)
    assert len(set(batch)) == 2
    assert not {1, 2} <= set(batch.tolist())  # the copy lost its score once its twin was taken
    with pytest.raises(InvalidParameterError, match="'k'"):
        select_batch(cuau_model, pool, 0)


def test_label_structures(cuau_frames):
    raw = [a.copy() for a in cuau_frames[:2]]
    for a in raw:
        a.calc = None
    labelled = label_structures(raw, EMT())
    ref = cuau_frames[0]
    assert labelled[0].get_potential_energy() == pytest.approx(ref.get_potential_energy())
    assert labelled[0].get_stress().shape == (6,)
    assert raw[0].calc is None
