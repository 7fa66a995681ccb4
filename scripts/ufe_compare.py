"""Is one UFE run visibly worse than a set of reference runs, entry by entry? The question of
experiment 6 (sec. 4.8, Fig. 7: each ablation worse than the full model on at least one matrix
entry), asked against the spread of several seeds of the full model instead of one.

    python scripts/ufe_compare.py runs/c10k-wo_oth runs/cos10k-s0 runs/cos10k-s1 runs/cos10k-s2

Each argument is a run folder (or its ``features.npz``, or a metrics.json holding the matrices)
of ``facefactors ufe train`` or ``ufe experiment world_a``: features of the held-out
identities; any other features file (``scripts/ufe_training_features.py``'s) is read itself. The matrices of Fig. 2 are read from the folder's metrics.json (``held_out_matrices``
of ``ufe train``, the matrices of ``world_a``) or computed from the features as the experiments
do. For every entry (x = feature, y = label) it prints the run's
value and the references' range, and marks the entry **worse** when it lies outside that range
on the bad side: a diagonal (weak-classifier accuracy, silhouette) below the lowest reference,
an off-diagonal (weak-classifier accuracy as a multiple of the majority-class chance, silhouette)
above the highest. ``--margin`` widens the range by that fraction of the references' own value,
so that noise on the last digit does not count. ``--figure PATH`` draws the run and the references
side by side (weak-classifier entries as multiples of chance on a log scale, silhouettes below;
the off-diagonal cells over the issue's limits, 1.5x and 0, outlined), for the reader who would
rather look than read.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np

from facefactors.metrics.features import load_features
from facefactors.utils.errors import UserError
from facefactors.utils.io import atomic_path


def matrices(path: str) -> dict:
    """{"weak_classifier": ..., "silhouette": ...} of one run, in the layout of
    :func:`facefactors.experiments.ufe.evaluate_matrices`."""
    given = Path(path)
    # A run's own features.npz stands for its folder (the stored matrices are computed from it);
    # any other .npz (e.g. scripts/ufe_training_features.py's) is read itself.
    metrics = given if given.suffix == ".json" else given / "metrics.json" if given.is_dir() else given.parent / "metrics.json" if given.name == "features.npz" else None
    if given.suffix == ".json" and not given.is_file():
        raise UserError(f"{given}: no such file; pass a run folder, its features.npz or a metrics.json")
    if metrics is not None and metrics.is_file():
        try:
            stored = json.loads(metrics.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{metrics}: not readable JSON ({e}); delete it or re-run `facefactors ufe train` to rewrite it") from None
        stored = stored.get("held_out_matrices", stored) if isinstance(stored, dict) else {}
        if "weak_classifier" in stored and "silhouette" in stored:  # ufe train's, or experiment world_a's
            weak, sil = stored["weak_classifier"], stored["silhouette"]
            if not (isinstance(weak, dict) and isinstance(sil, dict) and {"x", "y", "accuracy", "chance"} <= set(weak) and {"x", "y", "silhouette"} <= set(sil)):
                raise UserError(f"{metrics}: its matrices lack x / y / accuracy / chance / silhouette; re-run `facefactors ufe train` to rewrite it")
            return {"weak_classifier": weak, "silhouette": sil}
        if given.suffix == ".json":
            raise UserError(f"{given}: holds no weak_classifier and silhouette matrices; pass the metrics.json of `ufe train` or `ufe experiment world_a`")
    from facefactors.experiments import ufe_eval as ev

    feats = load_features(path)
    xs = list(feats.features)
    ys = [y for y in feats.labels if y in xs]
    if not ys:
        raise UserError(f"{path}: no label is also a feature (features {xs}, labels {list(feats.labels)}); pass a UFE run's features.npz")
    return {"weak_classifier": ev.weak_classifier_matrix(feats.features, feats.labels, xs, ys), "silhouette": ev.silhouette_matrix(feats.features, feats.labels, xs, ys)}


def entries(m: dict) -> dict[str, tuple[float, bool]]:
    """Every matrix entry by name -> (value, higher is better). Weak-classifier off-diagonals as
    multiples of the label's majority-class chance, as the issue's 1.5x limit reads them."""
    weak, sil = m["weak_classifier"], m["silhouette"]
    acc, chance, s = np.asarray(weak["accuracy"]), np.asarray(weak["chance"]), np.asarray(sil["silhouette"])
    out = {}
    for i, x in enumerate(weak["x"]):
        for j, y in enumerate(weak["y"]):
            if x == y:
                out[f"weak {x}"] = (float(acc[i, j]), True)
            else:
                out[f"weak {x} -> {y} (x chance)"] = (float(acc[i, j] / max(chance[j], 1e-9)), False)
    for i, x in enumerate(sil["x"]):
        for j, y in enumerate(sil["y"]):
            out[f"silhouette {x}" if x == y else f"silhouette {x} -> {y}"] = (float(s[i, j]), x == y)
    return out


def compare(run: dict, references: list[dict], margin: float = 0.0) -> list[dict]:
    """One row per entry the run and every reference share: value, reference range, verdict
    ("worse", "better" or "")."""
    ours, refs = entries(run), [entries(r) for r in references]
    rows = []
    for name, (value, higher_is_better) in ours.items():
        if not all(name in r for r in refs):
            continue
        vals = [r[name][0] for r in refs]
        lo, hi = min(vals), max(vals)
        slack = margin * max(abs(lo), abs(hi))
        low_side, high_side = value < lo - slack, value > hi + slack
        worse = low_side if higher_is_better else high_side
        better = high_side if higher_is_better else low_side
        rows.append({"entry": name, "value": value, "low": lo, "high": hi, "verdict": "worse" if worse else "better" if better else ""})
    return rows


LEAK_LIMIT = 1.5  # issue 4: every off-diagonal weak-classifier entry <= 1.5x majority chance
FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg")


def run_name(path: str) -> str:
    """A short column title for a run argument: its folder's name, or the file's stem."""
    given = Path(path)
    return given.parent.name if given.name in ("features.npz", "metrics.json") else given.stem if given.suffix else given.name


def figure(runs: dict[str, dict], path: str | Path) -> Path:
    """Two rows of heatmaps, one column per run: weak-classifier accuracy as a multiple of the
    label's majority chance (diagonal included, log colour scale shared by all columns; off-diagonal
    cells over the 1.5x limit outlined in red) and the silhouette matrix (-1 .. 1; off-diagonal
    cells over 0 outlined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    def outline(ax, i: int, j: int) -> None:  # a cell over the limit
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))

    ratios = {}
    for name, m in runs.items():
        weak = m["weak_classifier"]
        ratios[name] = np.asarray(weak["accuracy"], dtype=float) / np.maximum(np.asarray(weak["chance"], dtype=float), 1e-9)
    top = max(float(np.nanmax(r)) for r in ratios.values())
    norm = LogNorm(vmin=0.5, vmax=max(top, 2.0))
    first = next(iter(runs.values()))["weak_classifier"]
    cols = len(runs)
    fig, axes = plt.subplots(2, cols, figsize=(0.9 * len(first["y"]) * cols + 2, 1.4 * len(first["x"]) + 2.6), squeeze=False)
    for c, (name, m) in enumerate(runs.items()):
        weak, sil = m["weak_classifier"], m["silhouette"]
        ax = axes[0, c]
        r = ratios[name]
        im_weak = ax.imshow(np.clip(r, 0.5, None), norm=norm, cmap="magma_r")
        for i, x in enumerate(weak["x"]):
            for j, y in enumerate(weak["y"]):
                over = x != y and r[i, j] > LEAK_LIMIT
                ax.text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w" if r[i, j] > 6 else "k", weight="bold" if over else "normal")
                if over:
                    outline(ax, i, j)
        ax.set_title(name, fontsize=8)
        ax = axes[1, c]
        s = np.asarray(sil["silhouette"], dtype=float)
        im_sil = ax.imshow(s, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
        for i, x in enumerate(sil["x"]):
            for j, y in enumerate(sil["y"]):
                over = x != y and s[i, j] > 0  # issue 4: every off-diagonal silhouette <= 0
                ax.text(j, i, f"{s[i, j]:.3f}" if not over else f"+{s[i, j]:.4f}", ha="center", va="center", fontsize=5.5, color="w" if abs(s[i, j]) > 0.6 else "k", weight="bold" if over else "normal")
                if over:
                    outline(ax, i, j)
        for row, m_ in ((0, weak), (1, sil)):
            axes[row, c].set_xticks(range(len(m_["y"])), m_["y"], rotation=45, fontsize=7)
            axes[row, c].set_yticks(range(len(m_["x"])), m_["x"] if c == 0 else [""] * len(m_["x"]), fontsize=7)
    fig.colorbar(im_weak, ax=axes[0].tolist(), shrink=0.8, label="weak classifier, x majority chance")
    fig.colorbar(im_sil, ax=axes[1].tolist(), shrink=0.8, label="silhouette")
    path = Path(path)
    with atomic_path(path) as tmp:  # a figure interrupted half-written never replaces a good one
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".").lower())
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run to judge (folder or features.npz)")
    p.add_argument("references", nargs="+", help="reference runs, e.g. the full model's seeds")
    p.add_argument("--margin", type=float, default=0.0, help="widen the references' range by this fraction of their value (default 0)")
    p.add_argument("--all", action="store_true", help="print every entry, not only those outside the range")
    p.add_argument("--figure", metavar="PATH", help="also draw the run and the references side by side as heatmaps (.png, .pdf, .svg or .jpg)")
    args = p.parse_args(argv)
    if args.figure and not Path(args.figure).parent.is_dir():
        print(f"error: {args.figure}: its folder does not exist; create it or pick another path", file=sys.stderr)
        return 2
    if args.figure and Path(args.figure).suffix.lower() not in FIGURE_FORMATS:
        print(f"error: {args.figure}: not a figure format; end the name with one of {', '.join(FIGURE_FORMATS)}", file=sys.stderr)
        return 2
    try:
        run, refs = matrices(args.run), [matrices(r) for r in args.references]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = compare(run, refs, args.margin)
    if args.figure:
        named: dict[str, dict] = {}
        for arg, m in zip([args.run, *args.references], [run, *refs]):
            name = run_name(arg)
            named[name if name not in named else f"{name} ({len(named)})"] = m
        print(f"figure: {figure(named, args.figure)}")
    shown = rows if args.all else [r for r in rows if r["verdict"]]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head: stop quietly
    print(f"{args.run} against {len(args.references)} reference run(s): {sum(r['verdict'] == 'worse' for r in rows)} of {len(rows)} entries worse, {sum(r['verdict'] == 'better' for r in rows)} better")
    for r in shown:
        print(f"  {r['verdict'] or '-':6s} {r['entry']}: {r['value']:.4f} (references {r['low']:.4f} .. {r['high']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
