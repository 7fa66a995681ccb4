"""`facefactors world make | show | check`: write a world data set, picture the world, and check
that its faces look like faces to dlib's detector (issue 2, sections 2 and 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from facefactors.utils.errors import UserError

app = typer.Typer(no_args_is_help=True)
console = Console()


def _world(seed: int, size: int):
    from facefactors.world import FaceWorld, WorldConfig

    if size < 16:
        raise UserError(f"--size {size} is too small; use 16 or more (64 is the default)")
    return FaceWorld(WorldConfig(seed=seed, image_size=size))


@app.command()
def make(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="folder to write (images.npy, labels.csv, labels.yaml, world.json)"
        ),
    ],
    split: Annotated[
        str, typer.Option(help="train, val or test: identities are disjoint across splits")
    ] = "train",
    identities: Annotated[int, typer.Option(help="number of identities N")] = 100,
    images_per_identity: Annotated[int, typer.Option(help="images per identity M")] = 10,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    seed: Annotated[int, typer.Option(help="world seed")] = 0,
    labels: Annotated[
        str,
        typer.Option(
            help="all, a (identity/expression/lighting/pose) or b (age/gender/eyeglasses)"
        ),
    ] = "all",
    overwrite: Annotated[
        bool, typer.Option(help="replace the files of a non-empty folder")
    ] = False,
) -> None:
    """Render N identities x M images of the face world to a folder."""
    from facefactors.data.world import write_world_set
    from facefactors.world import samplers

    if split not in ("train", "val", "test"):
        raise UserError(f"--split {split!r}: use train, val or test")
    world = _world(seed, size)
    if identities > world.config.split_sizes()[split]:
        raise UserError(
            f"--identities {identities}: the {split} split has {world.config.split_sizes()[split]} identities; ask for fewer"
        )
    desc = {"all": None, "a": samplers.world_a_description, "b": samplers.world_b_description}
    if labels not in desc:
        raise UserError(f"--labels {labels!r}: use all, a or b")
    description = desc[labels](world, split, identities) if desc[labels] else None
    path = write_world_set(world, out, split=split, num_identities=identities, images_per_identity=images_per_identity,
                           image_size=size, description=description, overwrite=overwrite, progress=True)  # fmt: skip
    console.print(f"wrote {identities * images_per_identity} images to {path}")


@app.command()
def show(
    out: Annotated[Path, typer.Option("--out", help="PNG file to write")] = Path("world_grid.png"),
    identities: Annotated[int, typer.Option(help="identities in the factor grid")] = 3,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    seed: Annotated[int, typer.Option(help="world seed")] = 0,
) -> None:
    """Write a PNG: identities x lights (rows) by expressions x poses (columns), then one traversal strip per factor."""
    import numpy as np
    from PIL import Image

    from facefactors.utils.io import atomic_path
    from facefactors.world.grid import factor_grid, traversal_strips

    if out.suffix.lower() != ".png":
        raise UserError(f"{out}: --out must end in .png")
    world = _world(seed, size)
    with console.status("rendering the world grid"):
        grid = factor_grid(world, identities, size)
        strips = traversal_strips(world, steps=8, image_size=size)
    width = max(grid.shape[1], strips.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)
    canvas = np.concatenate(
        [pad(grid), np.full((size // 2, width, 3), 255, np.uint8), pad(strips)], 0
    )
    with atomic_path(out) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    console.print(f"wrote {out} ({canvas.shape[1]}x{canvas.shape[0]}): factor grid, then traversal strips (identity, expression, "
                  "lighting, pose, age, gender, skin tone, eyeglasses, hair, background, camera)")  # fmt: skip


@app.command()
def check(
    num: Annotated[int, typer.Option(help="number of 128x128 frontal renders")] = 200,
    seed: Annotated[int, typer.Option(help="world seed")] = 0,
    split: Annotated[str, typer.Option(help="identities of this split")] = "test",
) -> None:
    """dlib's HOG detector + 68-landmark predictor on frontal renders: detection rate and landmark error."""
    from facefactors.world.check import TARGET_ERROR, TARGET_RATE, run_check

    if num < 1:
        raise UserError(f"--num {num}: render at least one image")
    r = run_check(_world(seed, 128), num=num, image_size=128, split=split, progress=True)
    console.print(f"detection rate {r.detection_rate:.3f} (target >= {TARGET_RATE}), landmark error {r.landmark_error:.4f} "
                  f"x inter-ocular distance (target <= {TARGET_ERROR}) on {r.num_images} frontal renders")  # fmt: skip
    if not r.passed:
        console.print("[red]check failed[/]")
        raise typer.Exit(1)
    console.print("[green]check passed[/]")
