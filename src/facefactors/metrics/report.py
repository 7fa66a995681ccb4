"""The evaluation report: ``metrics.json`` (every number), ``report.md`` (figures as PNG files in
``figures/`` next to it) and ``report.html`` (the same, figures embedded as base64 PNG), with the
run config, the data split, a one-line "how to read this" per section and the chance level beside
every accuracy."""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
from pathlib import Path

import numpy as np

from facefactors.metrics import plots
from facefactors.utils.io import atomic_path, atomic_write_json, atomic_write_text

HOW_TO_READ = {
    "weak_classifier": "Row = whose feature, column = whose label. Diagonal should be high; off-diagonal near the column's chance level means that feature carries no information about that label (disentangled).",
    "silhouette": "Silhouette of a feature's points grouped by a label: 1 = tight separate clusters, ~0 = overlapping, < 0 = the label cuts across the structure. Want high diagonal, ~0 or negative elsewhere.",
    "tsne": "Each row embeds one attribute's features in 2-D; colours are the labels of each column. Same-colour clusters should appear only where the row and column name the same attribute.",
    "linear_probe": "Frozen features of an attribute, standardised, then a linear classifier on its own labels (held-out split). Compare accuracy with chance; the confusion matrix shows which classes are mixed up.",
    "standard": "Disentanglement metrics of Locatello et al. 2019 on the `codes`; all in [0, 1] with 1 = perfectly disentangled except total correlation (nats, 0 = independent codes) and informativeness/explicitness (compare with chance).",
}

STANDARD_SCALARS = [
    ("mig", "mig", "MIG", "0 (random codes)"),
    ("dci", "disentanglement", "DCI disentanglement", "0"),
    ("dci", "completeness", "DCI completeness", "0"),
    ("dci", "informativeness_test", "DCI informativeness (test accuracy)", "chance"),
    ("sap", "sap", "SAP", "0; < 1 even for perfect codes of many-class factors (1-D linear SVM)"),
    ("modularity", "modularity", "modularity", "high even for random codes (~0.6-0.8): compare with a random baseline"),
    ("explicitness", "explicitness_test", "explicitness (test ROC AUC)", "0.5"),
    ("irs", "irs", "IRS", "~0.3-0.4 for random codes"),
    ("total_correlation", "gaussian_total_correlation", "Gaussian total correlation (nats)", "0 = independent"),
]


def to_jsonable(obj):
    """numpy -> plain Python, NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)


def summary_rows(result: dict) -> list[tuple[str, str, str]]:
    """(metric, value, chance / reference) rows for the CLI table and the report."""
    rows = []
    std = result.get("standard")
    if std:
        chance = std.get("chance", {})
        for key, field, label, ref in STANDARD_SCALARS:
            if key in std:
                if ref == "chance":
                    ref = f"uniform {chance.get('uniform', float('nan')):.3f} / majority {chance.get('majority', float('nan')):.3f}"
                rows.append((label, _fmt(std[key][field]), ref))
    fs = result.get("features_suite", {})
    if "weak_classifier" in fs:
        wc = fs["weak_classifier"]
        for j, col in enumerate(wc["cols"]):
            for i, row in enumerate(wc["rows"]):
                rows.append((f"weak classifier {row} -> {col}", _fmt(wc["accuracy"][i, j]), f"uniform {wc['chance_uniform'][j]:.3f} / majority {wc['chance_majority'][j]:.3f}"))
    for name, lp in fs.get("linear_probe", {}).items():
        rows.append((f"linear probe {name} accuracy / macro-F1", f"{lp['accuracy']:.3f} / {lp['macro_f1']:.3f}", f"uniform {lp['chance_uniform']:.3f} / majority {lp['chance_majority']:.3f}"))
    return rows


class _Doc:
    """Blocks rendered twice: markdown (figures as files) and HTML (figures inline)."""

    def __init__(self, out_dir: Path):
        self.blocks: list[tuple] = []
        self.out_dir = out_dir
        self.figures: dict[str, bytes] = {}

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", header, rows))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def fig(self, name: str, png: bytes, caption: str):
        self.figures[name] = png
        self.blocks.append(("fig", name, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |\n|" + "---|" * len(b[1]) + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in b[2]))
            elif b[0] == "code":
                out.append("```\n" + b[1].rstrip() + "\n```")
            elif b[0] == "fig":
                out.append(f"![{b[2]}](figures/{b[1]}.png)")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
               "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
               "th{background:#f0f0f0}td:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}"
               ".how{color:#555;font-style:italic}img{max-width:100%}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                cls = " class='how'" if b[1].startswith("*How to read") else ""
                out.append(f"<p{cls}>{e(b[1].strip('*') if cls else b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            elif b[0] == "code":
                out.append(f"<details><summary>show</summary><pre>{e(b[1])}</pre></details>")
            elif b[0] == "fig":
                data = base64.b64encode(self.figures[b[1]]).decode("ascii")
                out.append(f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'><figcaption>{e(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _how(doc: _Doc, key: str):
    doc.p(f"*How to read this: {HOW_TO_READ[key]}*")


def _features_sections(doc: _Doc, fs: dict, labels: dict[str, np.ndarray] | None):
    if "weak_classifier" in fs:
        wc = fs["weak_classifier"]
        doc.h(2, "Weak-classifier matrix (UFE)")
        _how(doc, "weak_classifier")
        cols = [f"{c}\n(chance {wc['chance_uniform'][j]:.2f}/{wc['chance_majority'][j]:.2f})" for j, c in enumerate(wc["cols"])]
        doc.fig("weak_classifier", plots.heatmap(wc["accuracy"], [f"{r} feature" for r in wc["rows"]], cols, "logistic-regression accuracy (k-fold)", "label (chance 1/#classes / majority)", "feature", vmin=0, vmax=1), "weak-classifier accuracy")
        header = ["label", "1/#classes", "majority rate", "n"] + [f"{r} feature" for r in wc["rows"]]
        rows = [[c, f"{wc['chance_uniform'][j]:.3f}", f"{wc['chance_majority'][j]:.3f}", str(wc["n"][j])] + [_fmt(wc["accuracy"][i, j]) + " ± " + _fmt(wc["std"][i, j]) for i in range(len(wc["rows"]))] for j, c in enumerate(wc["cols"])]
        doc.table(header, rows)
    if "silhouette" in fs:
        s = fs["silhouette"]
        doc.h(2, "Silhouette matrix (UFE)")
        _how(doc, "silhouette")
        doc.fig("silhouette", plots.heatmap(s["silhouette"], [f"{r} feature" for r in s["rows"]], s["cols"], "silhouette score", "label", "feature", vmin=-1, vmax=1, cmap="coolwarm"), "silhouette matrix")
    if fs.get("tsne") and labels is not None:
        method = {"tsne": "t-SNE", "umap": "UMAP"}[next(iter(fs["tsne"].values()))["method"]]
        doc.h(2, f"{method} of the attribute features")
        _how(doc, "tsne")
        emb = {k: (v["embedding"], v["index"]) for k, v in fs["tsne"].items()}
        doc.fig("tsne", plots.scatter_grid(emb, labels, method), f"{method}, rows = features, columns = labels")
    if fs.get("linear_probe"):
        doc.h(2, "Linear probing (LatentFace protocol)")
        _how(doc, "linear_probe")
        rows = [[k, _fmt(v["accuracy"]), _fmt(v["macro_f1"]), f"{v['chance_uniform']:.3f}", f"{v['chance_majority']:.3f}", f"{v['num_train']}/{v['num_test']}"] for k, v in fs["linear_probe"].items()]
        doc.table(["feature -> label", "accuracy", "macro-F1", "chance 1/#classes", "chance majority", "train/test"], rows)
        for k, v in fs["linear_probe"].items():
            doc.fig(f"confusion_{k.replace('->', '_')}", plots.confusion(v["confusion"], [str(c) for c in v["classes"]], f"confusion: {k}"), f"confusion matrix {k}")


def _standard_section(doc: _Doc, std: dict):
    doc.h(2, "Standard disentanglement metrics (Locatello et al. 2019)")
    _how(doc, "standard")
    sp = std["split"]
    doc.p(f"Codes: {sp['num_codes']} dimensions; factors: {', '.join(std['factor_names'])}"
          + (f" (constant, dropped: {', '.join(std['dropped_factors'])})" if std["dropped_factors"] else "")
          + f"; split {sp['num_train']} train / {sp['num_test']} test (seed {sp['seed']}). DCI estimator: {std.get('dci', {}).get('estimator', 'n/a')}.")
    doc.table(["metric", "value", "chance / reference"], [list(r) for r in summary_rows({"standard": std})])
    names = std["factor_names"]
    codes = [f"z{i}" for i in range(sp["num_codes"])]
    if "mig" in std:
        doc.fig("mig_mutual_information", plots.heatmap(std["mig"]["mutual_information"], codes, names, "mutual information (nats), 20-bin codes", "factor", "code"), "MIG: mutual information code x factor")
    if "dci" in std:
        doc.fig("dci_importance", plots.heatmap(std["dci"]["importance_matrix"], codes, names, f"DCI importance ({std['dci']['estimator']})", "factor", "code"), "DCI importance matrix")
    if "sap" in std:
        doc.fig("sap_scores", plots.heatmap(std["sap"]["sap_score_matrix"], codes, names, "SAP: single-code SVM test accuracy", "factor", "code", vmin=0, vmax=1), "SAP score matrix")


def write_report(result: dict, out_dir: str | Path, title: str = "facefactors evaluation", config_text: str = "", data_info: dict | None = None, labels: dict[str, np.ndarray] | None = None) -> dict[str, Path]:
    """Write metrics.json, report.md (+ figures/) and report.html into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = _Doc(out_dir)
    doc.h(1, title)
    doc.p(f"Written {datetime.datetime.now().isoformat(timespec='seconds')} by `facefactors evaluate`; {result.get('num_samples', '?')} samples; every number is also in metrics.json.")
    doc.h(2, "Data and split")
    info = dict(data_info or {})
    doc.table(["item", "value"], [[k, json.dumps(to_jsonable(v)) if not isinstance(v, str) else v] for k, v in info.items()] or [["(none)", ""]])
    if "features_suite" in result:
        _features_sections(doc, result["features_suite"], labels)
    if "standard" in result:
        _standard_section(doc, result["standard"])
    timings = {**result.get("features_suite", {}).get("timings", {}), **result.get("standard", {}).get("timings", {})}
    if timings:
        doc.h(2, "Timings")
        doc.table(["metric", "seconds"], [[k, f"{v:.2f}"] for k, v in timings.items()])
    doc.h(2, "Run config")
    doc.code(config_text or "(no config.yaml: evaluated a bare features file)")
    paths = {"json": out_dir / "metrics.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    lean = dict(result)
    if "features_suite" in lean and "tsne" in lean["features_suite"]:  # the 2-D points belong in the figure, not the JSON
        fsu = dict(lean["features_suite"])
        fsu["tsne"] = {k: {"method": v["method"], "num_points": len(v["index"])} for k, v in fsu["tsne"].items()}
        lean["features_suite"] = fsu
    atomic_write_json(paths["json"], to_jsonable({"data": info, **lean}))
    (out_dir / "figures").mkdir(exist_ok=True)
    for name, png in doc.figures.items():
        with atomic_path(out_dir / "figures" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    atomic_write_text(paths["md"], doc.markdown())
    atomic_write_text(paths["html"], doc.html(title))
    for path in [*paths.values(), *(out_dir / "figures").glob("*.png")]:
        path.chmod(0o644)  # atomic writes create 0600 temp files; a report is meant to be shared
    return paths
