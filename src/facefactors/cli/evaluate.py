"""`facefactors evaluate RUN_DIR_OR_FEATURES.npz [--out DIR] [--metrics a,b]`: run every applicable
metric on a run's features (weak-classifier, silhouette, t-SNE and linear probing for
per-attribute features; the standard disentanglement suite when there is a `codes` array and
discrete labels), write metrics.json, report.md and report.html, and print a summary table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

# A group whose callback is the command, so that `facefactors evaluate PATH --out DIR` parses options
# after the argument (click groups stop at the first positional unless interspersed args are on).
app = typer.Typer(invoke_without_command=True, add_completion=False, subcommand_metavar="", context_settings={"allow_interspersed_args": True})


def default_out_dir(path: Path) -> Path:
    """RUN_DIR/evaluation for a run (its own metrics.json stays untouched); <stem>_evaluation beside a file."""
    return path / "evaluation" if path.is_dir() else path.with_name(path.stem + "_evaluation")


def run_evaluation(
    path: Path,
    out: Path | None = None,
    metrics: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    dci_estimator: str = "hist",
    embedding: str = "tsne",
    embed_samples: int = 1000,
) -> tuple[dict, dict[str, Path]]:
    """Load, evaluate, write the report; return (result, paths). The CLI's body, callable from Python."""
    from facefactors.metrics.features import load_features
    from facefactors.metrics.report import write_report
    from facefactors.metrics.suite import evaluate_feature_set

    fs = load_features(path)
    result = evaluate_feature_set(fs, metrics, seed=seed, progress=progress, dci_estimator=dci_estimator, embedding=embedding, tsne_max_samples=embed_samples)
    info = {"source": str(fs.source), "num_samples": fs.num_samples, "features": {k: list(v.shape) for k, v in fs.features.items()}}
    if fs.description is not None:
        info.update({"data set": fs.description.name, "labelled factors": list(fs.description.labelled), "provenance (split, seed)": fs.description.extra})
    info["labels used"] = result["labels"]
    info["label counts (labelled / total)"] = {k: f"{int((v >= 0).sum())}/{len(v)}" for k, v in fs.categorical_labels().items()}
    paths = write_report(result, out or default_out_dir(path), title=f"facefactors evaluation: {path.name}", config_text=fs.config_text, data_info=info, labels=fs.categorical_labels())
    return result, paths


@app.callback(invoke_without_command=True)
def evaluate(
    path: Path = typer.Argument(..., help="A run directory (with features.npz) or a features .npz file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/evaluation or <file>_evaluation)."),
    metrics: str | None = typer.Option(None, "--metrics", "-m", help="Comma-separated subset, e.g. weak_classifier,silhouette,mig,dci."),
    seed: int = typer.Option(0, help="Seed of every split and subsample."),
    dci_estimator: str = typer.Option("hist", help="DCI trees: 'hist' (fast, gain importance) or 'gbt' (exact disentanglement_lib, slow)."),
    embedding: str = typer.Option("tsne", help="2-D plots: 'tsne' or 'umap' (needs umap-learn)."),
    embed_samples: int = typer.Option(1000, help="Points per 2-D plot (a seeded subsample)."),
) -> None:
    """Evaluate features: metrics.json, report.md and report.html with figures."""
    from facefactors.metrics.report import summary_rows

    wanted = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    result, paths = run_evaluation(path, out, wanted, seed=seed, dci_estimator=dci_estimator, embedding=embedding, embed_samples=embed_samples)
    console = Console()
    table = Table(title=f"evaluation of {path}")
    for col in ("metric", "value", "chance / reference"):
        table.add_column(col)
    for row in summary_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(f"wrote {paths['json']}\n      {paths['md']}\n      {paths['html']}", soft_wrap=True, highlight=False)
