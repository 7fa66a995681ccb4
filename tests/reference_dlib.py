"""A deliberately literal, loop-based transliteration of disentanglement_lib's deterministic metric
computations (google-research/disentanglement_lib, evaluation/metrics/*.py), written from the
reference's semantics for testing only.

Layout follows the reference: codes ``mus`` are (num_codes, num_points) and factors ``ys`` are
(num_factors, num_points). No helper is shared with facefactors.metrics: discretisation is an
explicit per-element loop, mutual information and entropy come from sklearn's
``mutual_info_score`` exactly as the reference calls it, entropies of importance distributions are
written out as sums.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import linear_model, metrics, preprocessing, svm
from sklearn.ensemble import GradientBoostingClassifier


# --- utils.py -----------------------------------------------------------------------------------
def histogram_discretize(target, num_bins=20):
    out = np.zeros(target.shape, dtype=np.int64)
    for i in range(target.shape[0]):
        row = target[i]
        lo, hi = float(np.min(row)), float(np.max(row))
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, num_bins + 1)
        for n in range(target.shape[1]):
            b = 0
            for e in edges[:-1]:
                if row[n] >= e:
                    b += 1
            out[i, n] = b
    return out


def discrete_mutual_info(mus, ys):
    m = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = metrics.mutual_info_score(ys[j, :], mus[i, :])
    return m


def discrete_entropy(ys):
    h = np.zeros(ys.shape[0])
    for j in range(ys.shape[0]):
        h[j] = metrics.mutual_info_score(ys[j, :], ys[j, :])
    return h


# --- mig.py -------------------------------------------------------------------------------------
def mig(mus, ys):
    m = discrete_mutual_info(histogram_discretize(mus), ys)
    h = discrete_entropy(ys)
    total = 0.0
    for j in range(ys.shape[0]):
        col = sorted(m[:, j], reverse=True)
        total += (col[0] - col[1]) / h[j]
    return total / ys.shape[0]


# --- modularity_explicitness.py -----------------------------------------------------------------
def modularity(mi):
    scores = []
    for i in range(mi.shape[0]):
        sq = [v * v for v in mi[i]]
        best = max(sq)
        if best == 0.0:
            scores.append(0.0)
            continue
        delta = (sum(sq) - best) / (best * (len(sq) - 1.0))
        scores.append(1.0 - delta)
    return sum(scores) / len(scores)


def modularity_score(mus, ys):
    return modularity(discrete_mutual_info(histogram_discretize(mus), ys))


def explicitness(mus_train, ys_train, mus_test, ys_test):
    mean = np.mean(mus_train, axis=1)
    std = np.std(mus_train, axis=1)
    x_train = np.transpose((mus_train - mean[:, None]) / std[:, None])
    x_test = np.transpose((mus_test - mean[:, None]) / std[:, None])
    train, test = [], []
    for j in range(ys_train.shape[0]):
        clf = linear_model.LogisticRegression().fit(x_train, ys_train[j])
        mlb = preprocessing.MultiLabelBinarizer()
        train.append(metrics.roc_auc_score(mlb.fit_transform(np.expand_dims(ys_train[j], 1)), clf.predict_proba(x_train)))
        test.append(metrics.roc_auc_score(mlb.fit_transform(np.expand_dims(ys_test[j], 1)), clf.predict_proba(x_test)))
    return float(np.mean(train)), float(np.mean(test))


# --- dci.py -------------------------------------------------------------------------------------
def _entropy_base(p, base):
    s = sum(p)
    h = 0.0
    for v in p:
        q = v / s
        if q > 0:
            h -= q * math.log(q)
    return h / math.log(base)


def disentanglement(r):
    d, k = r.shape
    per_code = [1.0 - _entropy_base([r[i, j] + 1e-11 for j in range(k)], k) for i in range(d)]
    total = r.sum()
    weights = [r[i].sum() / total for i in range(d)] if total != 0 else [1.0 / d] * d
    return sum(a * b for a, b in zip(per_code, weights))


def completeness(r):
    d, k = r.shape
    per_factor = [1.0 - _entropy_base([r[i, j] + 1e-11 for i in range(d)], d) for j in range(k)]
    total = r.sum()
    weights = [r[:, j].sum() / total for j in range(k)] if total != 0 else [1.0 / k] * k
    return sum(a * b for a, b in zip(per_factor, weights))


def dci_gbt(mus_train, ys_train, mus_test, ys_test, seed=0):
    r = np.zeros([mus_train.shape[0], ys_train.shape[0]])
    train_acc, test_acc = [], []
    for j in range(ys_train.shape[0]):
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(mus_train.T, ys_train[j])
        r[:, j] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(mus_train.T) == ys_train[j]))
        test_acc.append(np.mean(model.predict(mus_test.T) == ys_test[j]))
    return r, float(np.mean(train_acc)), float(np.mean(test_acc))


# --- sap_score.py -------------------------------------------------------------------------------
def sap(mus, ys, mus_test, ys_test, continuous_factors):
    s = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            if continuous_factors:
                c = np.cov(mus[i], ys[j], ddof=1)
                if c[0, 0] > 1e-12:
                    s[i, j] = c[0, 1] ** 2 / (c[0, 0] * c[1, 1])
            else:
                clf = svm.LinearSVC(C=0.01, class_weight="balanced")
                clf.fit(mus[i][:, None], ys[j])
                s[i, j] = np.mean(clf.predict(mus_test[i][:, None]) == ys_test[j])
    gaps = []
    for j in range(s.shape[1]):
        col = sorted(s[:, j])
        gaps.append(col[-1] - col[-2])
    return float(np.mean(gaps)), s


# --- irs.py -------------------------------------------------------------------------------------
def irs(mus, ys, diff_quantile=0.99):
    ys_d = histogram_discretize(ys)
    keep = [i for i in range(mus.shape[0]) if np.var(mus[i]) > 0.0]
    lat = mus[keep].T  # (N, D_active)
    gen = ys_d.T
    n, d = lat.shape
    max_dev = np.zeros(d)
    for c in range(d):
        mu = sum(lat[:, c]) / n
        max_dev[c] = max(abs(v - mu) for v in lat[:, c])
    cum = np.zeros([d, gen.shape[1]])
    for i in range(gen.shape[1]):
        values = sorted(set(gen[:, i].tolist()))
        for g in values:
            rows = [r for r in range(n) if gen[r, i] == g]
            for c in range(d):
                group = [lat[r, c] for r in rows]
                mu = sum(group) / len(group)
                cum[c, i] += np.percentile([abs(v - mu) for v in group], diff_quantile * 100)
        cum[:, i] /= len(values)
    mat = 1.0 - cum / max_dev[:, None]
    per_code = mat.max(axis=1)
    return float(sum(per_code * max_dev) / sum(max_dev)), mat


# --- unsupervised_metrics.py --------------------------------------------------------------------
def gaussian_total_correlation(mus):
    cov = np.cov(mus)
    return 0.5 * (sum(math.log(cov[i, i]) for i in range(cov.shape[0])) - np.linalg.slogdet(cov)[1])


# --- beta_vae.py / factor_vae.py (same random stream as facefactors: numpy Generator) ----------
def beta_vae(sampler, rep, rng, batch_size, num_train, num_eval):
    def points(num):
        xs, ls = [], []
        for _ in range(num):
            k = int(rng.integers(len(sampler.factor_sizes)))
            f1 = sampler.sample_factors(batch_size, rng)
            f2 = sampler.sample_factors(batch_size, rng)
            f2[:, k] = f1[:, k]
            z1 = rep(sampler.sample_observations(f1, rng))
            z2 = rep(sampler.sample_observations(f2, rng))
            xs.append(np.mean(np.abs(z1 - z2), axis=0))
            ls.append(k)
        return np.array(xs), np.array(ls)

    xt, yt = points(num_train)
    xe, ye = points(num_eval)
    model = linear_model.LogisticRegression(random_state=0).fit(xt, yt)
    return model.score(xt, yt), model.score(xe, ye)


def factor_vae(sampler, rep, rng, batch_size, num_train, num_eval, num_var, threshold=0.05):
    f = sampler.sample_factors(num_var, rng)
    z = np.concatenate([rep(sampler.sample_observations(f[i : i + 64], rng)) for i in range(0, num_var, 64)])
    gvar = np.var(z, axis=0, ddof=1)
    active = [d for d in range(len(gvar)) if math.sqrt(gvar[d]) >= threshold]

    def votes(num):
        v = np.zeros((len(sampler.factor_sizes), len(gvar)), dtype=np.int64)
        for _ in range(num):
            k = int(rng.integers(len(sampler.factor_sizes)))
            fb = sampler.sample_factors(batch_size, rng)
            fb[:, k] = fb[0, k]
            zb = rep(sampler.sample_observations(fb, rng))
            lv = np.var(zb, axis=0, ddof=1)
            ratios = [lv[d] / gvar[d] for d in active]
            v[k, int(np.argmin(ratios))] += 1  # reference quirk: index within the active dims
        return v

    tv = votes(num_train)
    ev = votes(num_eval)
    classifier = [int(np.argmax(tv[:, d])) for d in range(tv.shape[1])]
    train = sum(tv[classifier[d], d] for d in range(tv.shape[1])) / tv.sum()
    evals = sum(ev[classifier[d], d] for d in range(ev.shape[1])) / ev.sum()
    return train, evals


def gaussian_wasserstein_correlation(mus):
    import scipy.linalg

    cov = np.cov(mus)
    scaled = np.zeros_like(cov)
    for i in range(cov.shape[0]):
        for j in range(cov.shape[1]):
            scaled[i, j] = cov[i, j] * cov[i, i]
    return 2 * np.trace(cov) - 2 * np.trace(np.real(scipy.linalg.sqrtm(scaled)))


def mutual_info_score_between_codes(mus):
    d = histogram_discretize(mus)
    m = discrete_mutual_info(d, d)
    total = 0.0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if i != j:
                total += m[i, j]
    return total / (m.shape[0] ** 2 - m.shape[0])
