"""`facefactors vae ...`: train the VAE family, traverse its latents, edit with attribute vectors.

    facefactors vae train --model beta_vae --preset quick --out runs/vae [--set loss.beta=2]
    facefactors vae traverse RUN_DIR
    facefactors vae attribute RUN_DIR --attribute eyeglasses [--with yes] [--data FOLDER]
    facefactors vae samples RUN_DIR
    facefactors vae experiment tradeoff|attributes|pythae [--preset quick]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from rich.console import Console

from facefactors.utils.errors import UserError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _parse_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--alphas {text!r}: expected comma-separated numbers, e.g. -2,-1,0,1,2") from None


def _data_for(run_dir: Path, data: Path | None, num_images: int):
    """Images to edit/traverse: a user folder (labels.csv) or the run's own data source."""
    from facefactors.train.vae import load_run
    from facefactors.train.vae_data import DataConfig, build_dataset

    model, cfg, _ = load_run(run_dir)
    if data is not None:
        dcfg = DataConfig(source="folder", path=str(data))
    else:
        dcfg = dataclasses.replace(cfg.data, num_images=min(cfg.data.num_images, num_images))
    return model, cfg, build_dataset(dcfg, cfg.model.image_size)


@app.command()
def train(
    model: str = typer.Option("beta_vae", help="vae | beta_vae | beta_tcvae | factor_vae | cvae"),
    preset: str = typer.Option("quick", help="tiny | quick | standard | full"),
    out: Path = typer.Option(Path("runs/vae"), help="run directory (an existing run resumes)"),
    set_: list[str] = typer.Option([], "--set", help="override a config field, e.g. --set loss.beta=2"),
    overwrite: bool = typer.Option(False, help="start afresh in a non-empty run directory"),
) -> None:
    """Train (or resume) a VAE-family model; writes a run directory."""
    from facefactors.config import load_config
    from facefactors.train.vae import VAEConfig
    from facefactors.train.vae import train as train_run

    cfg = load_config(VAEConfig, "vae", preset, [f"model.kind={model}", *set_])
    run = train_run(cfg, out, overwrite=overwrite)
    metrics = json.loads(run.metrics.read_text())
    console.print(f"[green]done[/] {run.path}: reconstruction {metrics['reconstruction_nats']:.1f} nats, KL {metrics['kl_nats']:.2f} nats, {metrics['train_wall_s']:.0f} s")


@app.command()
def traverse(
    run_dir: Path = typer.Argument(..., help="a VAE run directory"),
    out: Path | None = typer.Option(None, help="output folder (default RUN_DIR/traversals)"),
    images: int = typer.Option(3, help="number of faces to traverse around"),
    limit: float = typer.Option(3.0, help="sweep each dimension over [-limit, limit]"),
    steps: int = typer.Option(9, help="values per dimension"),
    data: Path | None = typer.Option(None, help="a folder of your images (default: the run's data)"),
) -> None:
    """Latent traversals of every dimension (rows ordered by KL), reconstructions and samples."""
    from facefactors.data.collate import collate
    from facefactors.edit.traversal import (
        dimension_kl,
        reconstruction_grid,
        sample_grid,
        save_png,
        traversal_grid,
    )

    model, cfg, dataset = _data_for(run_dir, data, 256)
    out = out or run_dir / "traversals"
    batch = collate([dataset[i] for i in range(min(len(dataset), 256))])
    labels = batch["labels"] if model.is_conditional else None
    kl = dimension_kl(model, batch["image"], labels)
    for i in range(min(images, len(batch["image"]))):
        lab = {k: v[i : i + 1] for k, v in labels.items()} if labels else None
        grid, order = traversal_grid(model, batch["image"][i : i + 1], limit, steps, kl, lab)
        save_png(grid, out / f"traversal_{i}.png")
    save_png(reconstruction_grid(model, batch["image"][:8], {k: v[:8] for k, v in labels.items()} if labels else None), out / "reconstructions.png")
    save_png(sample_grid(model), out / "samples.png")
    (out / "dimension_kl.json").write_text(json.dumps({"row_order": order, "kl_per_dim": [round(float(v), 4) for v in kl]}, indent=2))
    console.print(f"[green]wrote[/] {out} (rows = dimensions {order}, KL per dim {[round(float(v), 2) for v in kl]})")


@app.command()
def attribute(
    run_dir: Path = typer.Argument(..., help="a VAE run directory"),
    attribute_: str = typer.Option(..., "--attribute", help="labelled factor, e.g. eyeglasses, expression, or a labels.csv column"),
    with_: str | None = typer.Option(None, "--with", help="class meaning 'with' (default: the second class)"),
    without: str | None = typer.Option(None, help="class meaning 'without' (default: all other classes)"),
    data: Path | None = typer.Option(None, help="a folder of your images with labels.csv (default: the run's data)"),
    num_images: int = typer.Option(2048, help="images used to estimate the vector"),
    alphas: str = typer.Option("-2,-1,0,1,2,3", help="comma-separated alpha values"),
    rows: int = typer.Option(6, help="faces in the grid"),
    out: Path | None = typer.Option(None, help="output folder (default RUN_DIR/attributes/ATTRIBUTE)"),
) -> None:
    """Attribute vector Delta z = mean z(with) - mean z(without); strip and grid of z + alpha * Delta z."""
    from facefactors.data.collate import collate
    from facefactors.edit.attribute_vectors import (
        attribute_grid,
        attribute_strip,
        attribute_vector,
        split_by_attribute,
    )
    from facefactors.edit.traversal import encode_dataset, save_png
    from facefactors.utils.io import atomic_write_json

    model, cfg, dataset = _data_for(run_dir, data, num_images)
    codes, labels, _, _ = encode_dataset(model, dataset, max_items=num_images)
    if attribute_ not in labels:
        raise UserError(f"attribute {attribute_!r} is not among the labels of {data or run_dir} ({sorted(labels)}); choose one of them")
    vec = attribute_vector(codes, dataset.description, attribute_, labels[attribute_], with_, without)
    a = _parse_floats(alphas)
    _, without_mask, _, _ = split_by_attribute(dataset.description, attribute_, labels[attribute_], with_, without)
    idx = [int(i) for i in without_mask.nonzero()[0][:rows]]  # faces without the attribute, to add it
    batch = collate([dataset[i] for i in idx])
    lab = batch["labels"] if model.is_conditional else None
    out = out or run_dir / "attributes" / attribute_
    save_png(attribute_strip(model, batch["image"], vec.delta, a, {k: v[:1] for k, v in lab.items()} if lab else None), out / "strip.png")
    save_png(attribute_grid(model, batch["image"], vec.delta, a, lab), out / "grid.png")
    atomic_write_json(out / "vector.json", {**vec.to_dict(), "alphas": a, "grid_rows": idx})
    console.print(f"[green]wrote[/] {out}: |Delta z| = {vec.to_dict()['norm']:.3f} from {vec.n_with} with {vec.with_name!r} vs {vec.n_without} {vec.without_name!r}")


@app.command()
def experiment(
    name: str = typer.Argument(..., help="tradeoff | attributes | pythae"),
    out: Path = typer.Option(Path("runs/vae_experiments"), help="folder for the runs and the report"),
    preset: str = typer.Option("quick", help="preset of every training run"),
    set_: list[str] = typer.Option([], "--set", help="override a config field of every run"),
    rater: Path | None = typer.Option(None, help="attributes: a trained rater run (default: train one under OUT)"),
    variants: str = typer.Option("", help="tradeoff/attributes: comma-separated models (default: all of the experiment's)"),
    alphas: str = typer.Option("", help="attributes: comma-separated alphas of the curve (default 0,1,2,3,4,6)"),
) -> None:
    """Run one of the issue's experiments and write its report (report.md + results.json)."""
    from facefactors.experiments import vae as experiments

    fn = experiments.EXPERIMENTS.get(name)
    if fn is None:
        raise UserError(f"unknown experiment {name!r}; choose from {sorted(experiments.EXPERIMENTS)}")
    kwargs: dict = {"rater_dir": str(rater)} if rater is not None and name == "attributes" else {}
    if variants:
        if name == "pythae":
            raise UserError("--variants applies to tradeoff and attributes; pythae compares one β-VAE")
        chosen = [v.strip() for v in variants.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in experiments.VARIANTS]
        if unknown:
            raise UserError(f"--variants: unknown {unknown}; choose from {list(experiments.VARIANTS)}")
        kwargs["variants"] = chosen
    if alphas:
        if name != "attributes":
            raise UserError("--alphas applies to the attributes experiment only")
        kwargs["alphas"] = _parse_floats(alphas)
    result = fn(out / name, preset=preset, overrides=list(set_), **kwargs)
    console.print(f"[green]done[/] {out / name}/report.md")
    console.print(json.dumps(result.get("summary", {}), indent=2))
