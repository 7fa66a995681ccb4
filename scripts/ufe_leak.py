"""Where a UFE feature's leak lives: which coordinates carry a label it should not hold, and how
much of it L_ind's whitening sees with and without per-coordinate standardisation.

    python scripts/ufe_leak.py runs/X/features.npz --feature pose --label identity

``features.npz`` is what ``facefactors ufe experiment world_a`` writes (held-out identities).
Prints the weak-classifier accuracy (the metric of Fig. 2) of the label read from all the
feature's coordinates (with ``--null N`` also its spread over N shuffles of the label and the
share of shuffles that read as much: the reading's noise on these samples and its p-value; with
``--null-within LABEL`` too, the same with the label shuffled inside each class of LABEL, what a
feature that holds LABEL alone reads through these samples' uneven mix of the two), from
those whose standard deviation is above / at most each threshold, and the whitened between-class
scatter as a share of the whitened total (chance about (classes - 1) / (n - 1)) for the ridge
L_ind uses, without and with ``loss.whiten_std_floor``.

Then the silhouette of the label on the feature (Euclidean, as in the matrices of Fig. 2) and
the same silhouette once each class is moved to the common mean (and, for scale, the silhouette of
the label shuffled over the samples): a positive silhouette that
falls to zero or below is held by a shift of the class means alone, which L_ind (a linear
kernel: the between-class scatter) and the weak classifier both see; one that stays positive is
held by the classes' shapes (one class tighter than another), which neither sees. With
``--within LABEL`` (e.g. camera) also the silhouette inside each class of that label, so a
shift that is only a different mix of that label's classes shows as none, the label shuffled
inside each class of that label (the null of a feature that holds that label but not this one:
what a different mix alone scores), and the class means'
scatter, silhouette and weak-classifier accuracy once each class of that label is centred (a
different mix of its classes then no longer moves the means; for ``--feature expression --label
identity --within expression``, whether the person lives in how each face shows its class).

Last, where the class means' scatter lies among the feature's principal directions: its share in
the leading ones, unweighted (every unit of shift alike, whatever the direction's variance), next
to the share of the whitened scatter, as L_ind's whitened linear kernel weighs it (each direction
divided by its variance plus the ridge). A shift held in the leading directions is one that L_ind
presses on least in proportion. And how hard each form of the pair's L_ind term (``dependence``,
whitened and unwhitened, on the whole set, the whitening from the same samples) pushes on the class
means there: the size of its gradient's class-mean part in the 5 leading directions, the next 15
and the rest, per unit of the term's weight.

Where the file holds identities, two more lines test whether the shift is one that a fixed linear
map could take out (a linear concept eraser: the class means' directions projected out). The label
shuffled inside each person (each person keeps its share of each class): what the people's uneven
shares alone give through a feature that tells people apart. And the class means' directions of
half the people removed from the other half (10 random halvings): the share of the other half's
means' scatter that lies along them and its silhouette before and after. With ``--erase-from
OTHER.npz`` (e.g. the run's training people, ``scripts/ufe_training_features.py``) the same with
the directions of OTHER's class means.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import silhouette_score

from facefactors.metrics.features import load_features, within_class_residual
from facefactors.metrics.subspace import chance_levels, cv_accuracy
from facefactors.train.ufe_losses import dependence, whitening_matrix
from facefactors.utils.errors import UserError


def between_share(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(between-class scatter, total scatter) of the rows of z grouped by y."""
    z = z - z.mean(0)
    total = float((z**2).sum(1).mean())
    between = float(sum((y == c).mean() * (z[y == c].mean(0) ** 2).sum() for c in np.unique(y)))
    return between, total


def between_scatter(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(D, D) scatter of the class means, each weighted by its class's share: sum_c p_c m_c m_c^T
    with m_c the class mean less the overall mean; its trace is between_share's ``between``."""
    z = z - z.mean(0)
    means = np.stack([z[y == c].mean(0) for c in np.unique(y)])
    shares = np.array([(y == c).mean() for c in np.unique(y)])
    return (means * shares[:, None]).T @ means


def shift_in_leading_directions(f: np.ndarray, y: np.ndarray, eps: float, leading: tuple[int, ...] = (5, 20)) -> list[tuple[int, float, float]]:
    """[(k, raw share, whitened share)]: the share of the class means' scatter in the k principal
    directions of largest variance, unweighted and with each direction divided by its variance
    plus the ridge of :func:`whitening_matrix` (as L_ind sees it; the
    whitening without ``std_floor`` shares the covariance's eigenvectors)."""
    z = f - f.mean(0)
    variance, directions = np.linalg.eigh(np.cov(z.T))
    variance, directions = variance[::-1].clip(min=0), directions[:, ::-1]
    B = between_scatter(z, y)
    along = np.einsum("di,de,ei->i", directions, B, directions)  # the scatter along each direction
    whitened = along / (variance + eps * variance.mean() + 1e-12)
    return [(k, float(along[:k].sum() / along.sum()), float(whitened[:k].sum() / whitened.sum())) for k in leading if k < len(variance)]


def push_on_means(f: np.ndarray, y: np.ndarray, eps: float, bands: tuple[int, ...] = (5, 20)) -> tuple[str, dict[str, list[float]]]:
    """(the bands' names, e.g. "1-5 / 6-20 / 21-128", {"whitened", "unwhitened"}): for the pair's ``dependence`` term with and without the
    whitening (of these samples, ridge ``eps``), the norm of its gradient's class-mean part (sqrt of
    sum_c p_c |g_c - g|^2, g_c the mean gradient of class c's samples) in the principal directions
    0..bands[0], bands[0]..bands[1], ... and the rest: how hard a unit of its weight moves the
    class means apart or together along each band."""
    z = f - f.mean(0)
    variance, directions = np.linalg.eigh(np.cov(z.T))
    directions = directions[:, ::-1]
    edges = [0, *(b for b in bands if b < z.shape[1]), z.shape[1]]
    labels = torch.from_numpy(np.asarray(y))
    out = {}
    for name, W in (("whitened", whitening_matrix(torch.from_numpy(z), eps)), ("unwhitened", None)):
        x = torch.from_numpy(z).double().requires_grad_()
        dependence(x, labels, W).backward()
        grad = x.grad.numpy() @ directions  # in principal coordinates
        part = sum((y == c).mean() * (grad[y == c].mean(0) - grad.mean(0)) ** 2 for c in np.unique(y))
        out[name] = [float(np.sqrt(part[a:b].sum())) for a, b in zip(edges[:-1], edges[1:])]
    return " / ".join(f"{a + 1}-{b}" for a, b in zip(edges[:-1], edges[1:])), out


SHUFFLES = 30


def shuffled_silhouette(f: np.ndarray, y: np.ndarray, draws: int = SHUFFLES, seed: int = 0) -> tuple[float, float, float]:
    """(mean, sd, largest) silhouette of ``y`` shuffled over the rows of ``f``: what a feature
    holding none of the label scores on these samples by chance, the scale against which a small
    positive silhouette counts."""
    rng = np.random.default_rng(seed)
    values = np.array([silhouette_score(f, rng.permutation(y)) for _ in range(draws)])
    return float(values.mean()), float(values.std()), float(values.max())


def shuffled_reading(f: np.ndarray, y: np.ndarray, observed: float, draws: int, seed: int = 0, groups: np.ndarray | None = None) -> tuple[float, float, float, float, float]:
    """(mean, sd, 95th percentile, largest, share at or above ``observed``) of the weak classifier's
    accuracy (the metric of Fig. 2) with ``y`` shuffled over the rows of ``f``: what a feature that
    holds none of the label reads on these samples by chance. The last is the permutation test's
    p-value of the observed reading. With ``groups``, ``y`` is shuffled inside each group (each
    keeps its count of every class): what a feature that holds the groups but not the label reads
    through the groups' uneven mix of the label's classes."""
    rng = np.random.default_rng(seed)
    values = np.array([cv_accuracy(f, shuffled_within(y, groups, rng) if groups is not None else rng.permutation(y))[0] for _ in range(draws)])
    return float(values.mean()), float(values.std()), float(np.quantile(values, 0.95)), float(values.max()), float((values >= observed).mean())


def shuffled_within(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``y`` shuffled inside each group of ``groups`` (each group keeps its count of every class)."""
    shuffled = y.copy()
    for g in np.unique(groups):
        i = np.flatnonzero(groups == g)
        shuffled[i] = rng.permutation(y[i])
    return shuffled


def shuffled_within_groups_silhouette(f: np.ndarray, y: np.ndarray, groups: np.ndarray, draws: int = SHUFFLES, seed: int = 0) -> tuple[float, float, float]:
    """(mean, sd, largest) silhouette of ``y`` shuffled inside each group (each group keeps its
    count of every class): the null of a feature that holds the groups but not the label."""
    rng = np.random.default_rng(seed)
    values = np.array([silhouette_score(f, shuffled_within(y, groups, rng)) for _ in range(draws)])
    return float(values.mean()), float(values.std()), float(values.max())


def mean_directions(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(D, C-1) orthonormal basis of the span of the class means less the overall mean."""
    means = np.stack([f[y == c].mean(0) for c in np.unique(y)]) - f.mean(0)
    u, s, _ = np.linalg.svd(means.T, full_matrices=False)
    return u[:, s > 1e-9 * max(s.max(), 1e-300)][:, : len(means) - 1]


def erased(f: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``f`` with its component along ``basis`` (orthonormal columns) removed: the linear eraser."""
    return f - (f - f.mean(0)) @ basis @ basis.T


def share_along(f: np.ndarray, y: np.ndarray, basis: np.ndarray) -> float:
    """The share of the class means' scatter of (f, y) that lies in the span of ``basis``."""
    B = between_scatter(f, y)
    return float(np.trace(basis.T @ B @ basis) / max(np.trace(B), 1e-300))


def transfer_across_people(f: np.ndarray, y: np.ndarray, people: np.ndarray, splits: int = 10, seed: int = 0) -> tuple[float, float, float]:
    """Mean over ``splits`` random halvings of the people of (the share of half B's class-means'
    scatter along half A's class-means' directions, B's silhouette, B's silhouette with A's
    directions removed): whether one fixed linear eraser fitted on some people serves others."""
    rng = np.random.default_rng(seed)
    who = np.unique(people)
    rows = []
    for _ in range(splits):
        a = np.isin(people, rng.permutation(who)[: len(who) // 2])
        b = ~a
        basis = mean_directions(f[a], y[a])
        rows.append((share_along(f[b], y[b], basis), silhouette_score(f[b], y[b]), silhouette_score(erased(f[b], basis), y[b])))
    return tuple(float(v) for v in np.mean(rows, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("features", help="features.npz of a world_a experiment")
    parser.add_argument("--feature", default="pose")
    parser.add_argument("--label", default="identity")
    parser.add_argument("--eps", type=float, default=0.1, help="the whitening's ridge (loss.whiten_eps)")
    parser.add_argument("--std-floor", type=float, default=0.01, help="loss.whiten_std_floor for the standardised whitening")
    parser.add_argument("--within", default=None, help="also the silhouette inside each class of this label (e.g. camera)")
    parser.add_argument("--erase-from", default=None, help="another features file: its class means' directions removed from these features")
    parser.add_argument("--null", type=int, default=0, metavar="N", help="also read the label shuffled N times (about 0.7 s each for 800 x 128): the reading's noise and p-value")
    parser.add_argument("--null-within", default=None, metavar="LABEL", help="with --null: also shuffle inside each class of LABEL (e.g. expression for --feature expression --label identity)")
    args = parser.parse_args()
    try:  # a run's features.npz or its folder; one-line errors naming the file and the fix
        features = load_features(args.features)
        f, y = features.pair(args.feature, args.label)
        within = features.pair(args.feature, args.within)[1] if args.within else None
        null_groups = features.pair(args.feature, args.null_within)[1] if args.null_within else None
        if null_groups is not None and args.null <= 0:
            raise UserError("--null-within shuffles the label for --null: give --null N as well (e.g. --null 30)")
        people = features.labels.get("identity") if args.label != "identity" else None
        other = load_features(args.erase_from).pair(args.feature, args.label) if args.erase_from else None
        if other is not None and other[0].shape[1] != f.shape[1]:
            raise UserError(f"{args.erase_from} holds {args.feature} features of {other[0].shape[1]} dimensions, {args.features} of {f.shape[1]}; give features of the same model")
    except UserError as e:
        parser.error(str(e))
    read_all = cv_accuracy(f, y)[0]
    _, majority = chance_levels(y)
    print(f"{args.label} read from the {args.feature} feature: {read_all:.3f} = {read_all / majority:.2f}x majority chance (all {f.shape[1]} coordinates)")
    if args.null > 0:
        mean, sd, p95, top, p = shuffled_reading(f, y, read_all, args.null)
        print(f"  with the labels shuffled ({args.null} draws): mean {mean:.3f}, sd {sd:.3f}, 95th percentile {p95:.3f} = {p95 / majority:.2f}x, "
              f"largest {top:.3f} = {top / majority:.2f}x; share at or above {read_all:.3f}: {p:.3f}")
    if null_groups is not None:
        mean, sd, p95, top, p = shuffled_reading(f, y, read_all, args.null, groups=null_groups)
        print(f"  shuffled inside each {args.null_within} ({args.null} draws): mean {mean:.3f} = {mean / majority:.2f}x, sd {sd:.3f}, 95th percentile {p95:.3f} = {p95 / majority:.2f}x, "
              f"largest {top:.3f} = {top / majority:.2f}x; share at or above {read_all:.3f}: {p:.3f}")
    std = f.std(0)
    for t in (0.01, 0.05, 0.1):
        above = std > t
        parts = [f"{name} {int(k.sum())}: {cv_accuracy(f[:, k], y)[0]:.3f}" for name, k in ((f"std > {t}", above), (f"std <= {t}", ~above)) if k.any()]
        print("  " + "; ".join(parts))
    print(f"whitened between-class share (chance ~{(len(np.unique(y)) - 1) / (len(y) - 1):.3f}):")
    for floor in (0.0, args.std_floor):
        W = whitening_matrix(torch.from_numpy(f), args.eps, floor).numpy()
        b, t = between_share(f @ W, y)
        print(f"  std_floor {floor:g}: between {b:.2f} of {t:.1f} ({b / t:.3f})")
    # every class moved to one point (the silhouette does not depend on which)
    print(f"silhouette of {args.label} on the {args.feature} feature: {silhouette_score(f, y):+.4f}; with the class means removed: {silhouette_score(within_class_residual(f, y), y):+.4f}")
    mean, sd, top = shuffled_silhouette(f, y)
    print(f"  with the labels shuffled ({SHUFFLES} draws): mean {mean:+.4f}, sd {sd:.4f}, largest {top:+.4f}")
    if people is not None:
        mean, sd, top = shuffled_within_groups_silhouette(f, y, people)
        print(f"  shuffled inside each identity ({SHUFFLES} draws): mean {mean:+.4f}, sd {sd:.4f}, largest {top:+.4f}")
        share, before, after = transfer_across_people(f, y, people)
        print(f"  the class means' directions of half the identities removed from the other half (10 halvings): "
              f"share of its means' scatter along them {share:.2f}; its silhouette {before:+.4f} -> {after:+.4f}")
    if other is not None:
        basis = mean_directions(*other)
        print(f"  the class means' directions of {args.erase_from} removed: share of these means' scatter along them "
              f"{share_along(f, y, basis):.2f}; silhouette {silhouette_score(f, y):+.4f} -> {silhouette_score(erased(f, basis), y):+.4f}")
    if within is not None:
        b, t = between_share(f, within)
        print(f"  the {args.within} classes' share of the feature's variance: {b / t:.3f}")
        mean, sd, top = shuffled_within_groups_silhouette(f, y, within)
        print(f"  shuffled inside each {args.within} ({SHUFFLES} draws): mean {mean:+.4f}, sd {sd:.4f}, largest {top:+.4f}")
        for c in np.unique(within):
            k = within == c
            if len(np.unique(y[k])) >= 2:
                mean, sd, top = shuffled_silhouette(f[k], y[k])
                print(f"  inside {args.within} {c} ({int(k.sum())} samples): {silhouette_score(f[k], y[k]):+.4f} "
                      f"(shuffled there, {SHUFFLES} draws: mean {mean:+.4f}, sd {sd:.4f}, largest {top:+.4f})")
        centred = within_class_residual(f, within)
        print(f"  each {args.within} centred: means' scatter {between_share(centred, y)[0]:.4f} (before {between_share(f, y)[0]:.4f}); "
              f"silhouette {silhouette_score(centred, y):+.4f}; {args.label} read from it {cv_accuracy(centred, y)[0]:.3f} (before {read_all:.3f})")
    print(f"the {args.label} means' scatter in the {args.feature} feature's leading principal directions (unweighted / whitened, as L_ind sees it):")
    for k, raw, whitened in shift_in_leading_directions(f, y, args.eps):
        print(f"  leading {k:3d}: {raw:.2f} / {whitened:.2f}")
    bands, pushes = push_on_means(f, y, args.eps)
    print(f"push of L_ind's {args.feature}/{args.label} term on those means (per unit weight) in the principal directions {bands}:")
    for name, values in pushes.items():
        print(f"  {name:10s}: " + " / ".join(f"{v:.2e}" for v in values))


if __name__ == "__main__":
    main()
