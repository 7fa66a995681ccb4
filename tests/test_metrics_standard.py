"""Standard disentanglement metrics: agreement with a literal transliteration of
disentanglement_lib (tests/reference_dlib.py) to 1e-6, hand-computed cases, invariances, and the
extremes (codes = factors -> ~1, random codes -> ~0)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference_dlib as ref
from facefactors.metrics import dci, explicitness, irs, mig, modularity, sap, total_correlation
from facefactors.metrics.dci import completeness_from_importance, disentanglement_from_importance
from facefactors.metrics.discrete import histogram_discretize, mutual_info_matrix
from facefactors.metrics.modularity import modularity_from_mi
from facefactors.metrics.unsupervised import gaussian_total_correlation
from facefactors.utils.errors import DataError


def _toy(n=600, sizes=(3, 4, 2), d_extra=2, noise=0.5, seed=0):
    """Factors (n, K) and entangled noisy codes (n, K + d_extra)."""
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n) for s in sizes], 1)
    mix = rng.normal(size=(len(sizes), len(sizes) + d_extra))
    codes = f @ mix + noise * rng.normal(size=(n, len(sizes) + d_extra))
    return codes, f


# --- agreement with the reference transliteration ------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_discretisation_and_mi_match_reference(seed):
    codes, f = _toy(seed=seed)
    ours = histogram_discretize(codes)
    theirs = ref.histogram_discretize(codes.T).T
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(mutual_info_matrix(ours, f), ref.discrete_mutual_info(theirs.T, f.T), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mig_modularity_irs_tc_match_reference(seed):
    codes, f = _toy(seed=seed)
    assert abs(mig(codes, f)["mig"] - ref.mig(codes.T, f.T)) < 1e-6
    assert abs(modularity(codes, f)["modularity"] - ref.modularity_score(codes.T, f.T)) < 1e-6
    assert abs(irs(codes, f)["irs"] - ref.irs(codes.T, f.T)[0]) < 1e-6
    np.testing.assert_allclose(irs(codes, f)["irs_matrix"], ref.irs(codes.T, f.T)[1], atol=1e-6)
    tc = total_correlation(codes)
    assert abs(tc["gaussian_total_correlation"] - ref.gaussian_total_correlation(codes.T)) < 1e-6
    assert abs(tc["gaussian_wasserstein_correlation"] - ref.gaussian_wasserstein_correlation(codes.T)) < 1e-6
    assert abs(tc["mutual_info_score"] - ref.mutual_info_score_between_codes(codes.T)) < 1e-6


def test_sap_and_explicitness_match_reference():
    codes, f = _toy(n=450)
    tr, te = slice(0, 300), slice(300, 450)
    ours = sap(codes[tr], f[tr], codes[te], f[te])
    score, matrix = ref.sap(codes[tr].T, f[tr].T, codes[te].T, f[te].T, continuous_factors=False)
    assert abs(ours["sap"] - score) < 1e-6
    np.testing.assert_allclose(ours["sap_score_matrix"], matrix, atol=1e-6)
    cont = np.random.default_rng(3).normal(size=(300, 2)) + codes[tr, :2]
    ours_c = sap(codes[tr], cont, continuous_factors=True)
    score_c, matrix_c = ref.sap(codes[tr].T, cont.T, None, None, continuous_factors=True)
    assert abs(ours_c["sap"] - score_c) < 1e-6
    np.testing.assert_allclose(ours_c["sap_score_matrix"], matrix_c, atol=1e-6)
    e = explicitness(codes[tr], f[tr], codes[te], f[te])
    e_train, e_test = ref.explicitness(codes[tr].T, f[tr].T, codes[te].T, f[te].T)
    assert abs(e["explicitness_train"] - e_train) < 1e-6 and abs(e["explicitness_test"] - e_test) < 1e-6


def test_dci_exact_estimator_matches_reference():
    codes, f = _toy(n=240, sizes=(3, 2), d_extra=1)
    tr, te = slice(0, 160), slice(160, 240)
    ours = dci(codes[tr], f[tr], codes[te], f[te], estimator="gbt")
    r, acc_tr, acc_te = ref.dci_gbt(codes[tr].T, f[tr].T, codes[te].T, f[te].T)
    np.testing.assert_allclose(ours["importance_matrix"], r, atol=1e-9)
    assert abs(ours["disentanglement"] - ref.disentanglement(r)) < 1e-6
    assert abs(ours["completeness"] - ref.completeness(r)) < 1e-6
    assert ours["informativeness_train"] == pytest.approx(acc_tr) and ours["informativeness_test"] == pytest.approx(acc_te)


def test_dci_scores_from_random_importance_match_reference():
    r = np.random.default_rng(5).random((7, 4)) ** 3
    assert abs(disentanglement_from_importance(r)[0] - ref.disentanglement(r)) < 1e-9
    assert abs(completeness_from_importance(r)[0] - ref.completeness(r)) < 1e-9


# --- hand-computed cases ------------------------------------------------------------------------
def test_mig_hand_computed_two_factor_toy():
    # full factorial: v1 in {0..3}, v2 in {0,1}, 5 repeats; z1 = v1, z2 = v2, z3 = v1 // 2.
    v1, v2 = np.meshgrid(np.arange(4), np.arange(2), indexing="ij")
    f = np.tile(np.stack([v1.ravel(), v2.ravel()], 1), (5, 1))
    codes = np.stack([f[:, 0], f[:, 1], f[:, 0] // 2], 1).astype(float)
    out = mig(codes, f)
    # v1: I(z1)=log4, next best I(z3)=log2, H=log4 -> 1/2;  v2: I(z2)=log2, others 0, H=log2 -> 1.
    np.testing.assert_allclose(out["mig_per_factor"], [0.5, 1.0], atol=1e-12)
    assert out["mig"] == pytest.approx(0.75, abs=1e-12)
    np.testing.assert_allclose(out["mutual_information"][:, 0], [math.log(4), 0.0, math.log(2)], atol=1e-12)


def test_modularity_dci_tc_hand_computed():
    assert modularity_from_mi(np.array([[1.0, 0.0], [1.0, 1.0]]))[0] == pytest.approx(0.5)
    # one code explains both factors: disentanglement 0, completeness 1.
    r = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert disentanglement_from_importance(r)[0] == pytest.approx(0.0, abs=1e-6)
    assert completeness_from_importance(r)[0] == pytest.approx(1.0, abs=1e-6)
    assert disentanglement_from_importance(np.eye(3))[0] == pytest.approx(1.0, abs=1e-6)
    rho = 0.6
    assert gaussian_total_correlation(np.array([[1.0, rho], [rho, 1.0]])) == pytest.approx(-0.5 * math.log(1 - rho**2))


def test_sap_continuous_hand_computed():
    v = np.random.default_rng(0).normal(size=(200, 1))
    codes = np.concatenate([v, np.zeros((200, 1)) + 3.0], 1)  # z1 = v (R^2 = 1), z2 constant (0)
    out = sap(codes, v, continuous_factors=True)
    np.testing.assert_allclose(out["sap_score_matrix"][:, 0], [1.0, 0.0], atol=1e-12)
    assert out["sap"] == pytest.approx(1.0)


# --- invariances --------------------------------------------------------------------------------
def test_invariant_to_code_permutation_and_scaling():
    codes, f = _toy(n=900)
    perm = np.array([3, 0, 4, 1, 2])
    scale = np.array([2.0, 0.5, 7.0, 1.0, 0.1])
    for transformed in (codes[:, perm], codes * scale + 4.0):
        assert mig(transformed, f)["mig"] == pytest.approx(mig(codes, f)["mig"], abs=1e-3)
        assert modularity(transformed, f)["modularity"] == pytest.approx(modularity(codes, f)["modularity"], abs=1e-3)
        assert explicitness(transformed, f)["explicitness_test"] == pytest.approx(explicitness(codes, f)["explicitness_test"], abs=1e-3)
        assert total_correlation(transformed)["gaussian_total_correlation"] == pytest.approx(total_correlation(codes)["gaussian_total_correlation"], abs=1e-9)
    # IRS weights codes by their spread, so it is invariant to permutation and a *common* scale only
    for transformed in (codes[:, perm], 3.0 * codes - 1.0):
        assert irs(transformed, f)["irs"] == pytest.approx(irs(codes, f)["irs"], abs=1e-9)
    p = sap(codes[:, perm], f)["sap"]
    assert p == pytest.approx(sap(codes, f)["sap"], abs=1e-9)  # SVM per single code: order cannot matter
    a, b = dci(codes, f), dci(codes[:, perm], f)
    np.testing.assert_allclose(b["importance_matrix"], a["importance_matrix"][perm], atol=0.05)


# --- extremes -----------------------------------------------------------------------------------
def test_perfect_codes_score_near_one_and_random_near_zero():
    rng = np.random.default_rng(0)
    f = np.stack([rng.integers(0, s, 1500) for s in (4, 3, 5)], 1)
    perfect = f + 0.01 * rng.normal(size=f.shape)
    random = rng.normal(size=(1500, 3))
    assert mig(perfect, f)["mig"] > 0.95 and mig(random, f)["mig"] < 0.05
    d_p, d_r = dci(perfect, f), dci(random, f)
    assert d_p["disentanglement"] > 0.95 and d_p["completeness"] > 0.95 and d_p["informativeness_test"] > 0.99
    assert d_r["disentanglement"] < 0.1 and d_r["completeness"] < 0.1
    assert irs(perfect, f)["irs"] > 0.95
    assert modularity(perfect, f)["modularity"] > 0.95
    assert explicitness(perfect, f)["explicitness_test"] > 0.99
    assert explicitness(random, f)["explicitness_test"] < 0.6
    assert sap(random, f)["sap"] < 0.05 and sap(perfect, f)["sap"] > sap(random, f)["sap"] + 0.2
    assert total_correlation(random)["gaussian_total_correlation"] < 0.01


def test_bad_input_gives_data_error():
    with pytest.raises(DataError, match="missing"):
        mig(np.zeros((4, 2)), np.array([0, 1, -1, 0]))
    with pytest.raises(DataError, match="rows"):
        mig(np.zeros((4, 2)), np.zeros((3, 1), dtype=int))
    with pytest.raises(DataError, match="constant"):
        mig(np.random.default_rng(0).normal(size=(10, 2)), np.zeros((10, 1), dtype=int))
