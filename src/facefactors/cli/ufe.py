"""`facefactors ufe ...`: train, predict, compose, rater, experiments of the Universal Face Encoder."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Universal Face Encoder (Banerjee, Joshi, Turcot).")
console = Console()
err = Console(stderr=True)


@app.command()
def train(
    preset: str = typer.Option("quick", help="tiny | quick | standard | full"),
    out: str = typer.Option("runs/ufe-quick", help="run directory (resumed if it holds a checkpoint)"),
    set_: list[str] = typer.Option([], "--set", help="config override section.field=value (repeatable)"),
    overwrite: bool = typer.Option(False, help="start afresh even if OUT holds a run"),
    evaluate: bool = typer.Option(True, help="write features.npz and the matrices of the held-out set after training"),
) -> None:
    """Train on world A (identity, expression, lighting, pose labelled; 0/30 deg poses; RGB+NIR)."""
    from facefactors.config import load_config
    from facefactors.experiments.ufe import (
        evaluate_matrices,
        held_out_metrics,
        train_stream,
        world_a_sets,
    )
    from facefactors.train.common import RunDir
    from facefactors.train.ufe import UFETrainConfig, check_train_config, train_ufe

    cfg = load_config(UFETrainConfig, "ufe", preset, set_)
    check_train_config(cfg)  # a mistyped option is refused before minutes of rendering, not after
    train_set, test = world_a_sets(cfg)
    stream, desc = train_stream(cfg, train_set)
    run, model = train_ufe(cfg, out, stream, desc, overwrite=overwrite)
    pinned = json.loads(run.metrics.read_text()).get("pinned") if cfg.model.pin_idle_std > 0 and run.metrics.is_file() else None
    if pinned is not None:
        units = ", ".join(f"{name} {coords}" for name, coords in pinned.items()) or "none"
        err.print(f"idle units pinned (spread <= {cfg.model.pin_idle_std:g} over training images): {units}")
    if evaluate:
        res = evaluate_matrices(model, test, run.path, tsne=False)
        # the whole matrices too: scripts/ufe_compare.py sets a run against other seeds entry by entry
        RunDir(run.path).update_metrics(held_out_metrics(res))
        _print_targets(res["targets"])
    err.print(f"[green]done[/]: {run.path} (weights.safetensors, features.npz, metrics.json)")


def _print_targets(t: dict) -> None:
    table = Table(title="held-out identities")
    table.add_column("attribute")
    table.add_column("weak-classifier acc")
    table.add_column("silhouette")
    for a, v in t["weak_diagonal"].items():
        table.add_row(a, f"{v:.3f}", f"{t['silhouette_diagonal'][a]:.3f}")
    console.print(table)
    console.print(f"max off-diagonal weak acc / chance: {t['weak_offdiag_over_chance_max']:.2f}; max off-diagonal silhouette: {t['silhouette_offdiag_max']:.3f}")


@app.command()
def predict(
    run_dir: str = typer.Argument(..., help="a UFE run directory"),
    images: list[str] = typer.Argument(..., help="image files"),
    top: int = typer.Option(3, help="classes shown per attribute"),
    as_json: bool = typer.Option(False, "--json", help="print all probabilities as JSON"),
) -> None:
    """Per-attribute class probabilities of the prediction heads for each image."""
    import torch

    from facefactors.data.images import load_image
    from facefactors.train.ufe import load_ufe

    model = load_ufe(run_dir)
    batch = torch.stack([load_image(p, model.config.image_size) for p in images])
    probs = model.predict(batch)
    if as_json:
        out = {p: {a: dict(zip(model.class_names(a), probs[a][i].tolist())) for a in probs} for i, p in enumerate(images)}
        console.print_json(json.dumps(out))
        return
    for i, p in enumerate(images):
        table = Table(title=p)
        table.add_column("attribute")
        table.add_column("top classes (probability)")
        for a, pr in probs.items():
            v, k = pr[i].topk(min(top, pr.shape[1]))
            names = model.class_names(a)
            table.add_row(a, ", ".join(f"{names[int(j)]} ({float(x):.2f})" for x, j in zip(v, k)))
        console.print(table)


@app.command()
def compose(
    run_dir: str = typer.Argument(..., help="a UFE run directory"),
    image_a: str = typer.Argument(..., help="the face to edit"),
    image_b: str = typer.Argument(..., help="the face the chosen attributes come from"),
    take: list[str] = typer.Option(["expression"], help="subspaces taken from B (repeatable), e.g. pose to repose"),
    out: str = typer.Option("composite.png", help="output PNG: A, B, reconstruction of A, composite"),
) -> None:
    """Decode A with the chosen attribute features of B (paper sec. 4.6)."""
    import torch

    from facefactors.data.images import load_image
    from facefactors.edit.composite import composite, reconstruct, save_grid
    from facefactors.train.ufe import load_ufe
    from facefactors.utils.errors import UserError

    model = load_ufe(run_dir)
    a = load_image(image_a, model.config.image_size)[None]
    b = load_image(image_b, model.config.image_size)[None]
    try:
        c = composite(model, a, b, take)
    except ValueError as e:
        raise UserError(str(e)) from None
    save_grid(torch.cat([a, b, reconstruct(model, a), c]), out)
    err.print(f"[green]wrote[/] {out}")


@app.command()
def rater(
    preset: str = typer.Option("quick", help="tiny | quick | standard | full"),
    out: str = typer.Option("runs/rater", help="run directory"),
    set_: list[str] = typer.Option([], "--set", help="config override section.field=value"),
    overwrite: bool = typer.Option(False),
) -> None:
    """Train the independent rater on world ground truth (used by the user study and by the VAE family)."""
    from facefactors.train.rater import train_rater

    path = train_rater(preset, out, set_, overwrite)
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    console.print_json(json.dumps(metrics.get("rater_accuracy", {})))
    err.print(f"[green]done[/]: {path}")


@app.command()
def experiment(
    name: str = typer.Argument(..., help="world_a | baseline | composites | user_study | multi_dataset | ablation | world_floor"),
    preset: str = typer.Option("quick", help="tiny | quick | standard | full"),
    out: str | None = typer.Option(None, help="output folder (default runs/ufe-NAME-PRESET)"),
    run: str | None = typer.Option(None, help="reuse a trained UFE run instead of training one"),
    set_: list[str] = typer.Option([], "--set", help="config override section.field=value"),
    variants: str | None = typer.Option(None, help="ablation only: comma-separated ablations to run, e.g. wo_rec,wo_oth (default: all)"),
    rater: str | None = typer.Option(None, help="user_study / multi_dataset only: the judging rater's run folder (default runs/rater-PRESET[-zoomZ], trained there if missing)"),
    full: bool = typer.Option(True, "--full/--no-full", help="ablation only: --no-full trains and evaluates the chosen variants alone (compare them with a full model's saved matrices by scripts/ufe_compare.py)"),
) -> None:
    """Run one of the paper's six experiments on the world (or world_floor: the leakage the world itself fixes); writes report.md and metrics.json."""
    from facefactors.experiments.ufe import run_experiment

    chosen = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    report = run_experiment(name, preset, out, set_, run=run, variants=chosen, rater=rater, full=full)
    err.print(f"[green]report[/]: {report}")
