"""`facefactors demo`: the README's main job.

Trains the Universal Face Encoder (quick preset) on the face world, evaluates it on held-out
identities (weak-classifier and silhouette matrices, t-SNE), makes composites and compares them
with the world's true composites, trains the independent rater and runs the automated user
study, then writes one report and prints where it is.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from facefactors.utils.device import apply_threads, usable_cores


def demo(out: str = "runs/demo", preset: str = "quick", threads: int = 0) -> None:
    """Train, evaluate and report the UFE on the face world (about 20 minutes on 2 CPU cores).

    ``threads``: torch threads for every step; 0 = all usable cores. The presets hold one
    thread, because runs started side by side on a 2-core machine crawl with two each; the demo
    runs one job at a time, and with both of 2 cores its UFE training takes 8.4 minutes
    (docs/results.md, 2026-12-03)."""
    from rich.console import Console

    from facefactors.config import load_config
    from facefactors.experiments import ufe as X
    from facefactors.train.rater import ensure_rater
    from facefactors.train.ufe import UFETrainConfig
    from facefactors.utils.errors import UserError
    from facefactors.utils.io import atomic_write_text

    if threads < 0:
        raise UserError(f"--threads {threads}: give a thread count >= 1, or 0 for every usable core")

    console = Console(stderr=True)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    cfg = load_config(UFETrainConfig, "ufe", preset)
    cfg.data.cache = str(root / "cache")
    cfg.trainer.threads = threads if threads > 0 else usable_cores()
    apply_threads(cfg.trainer.threads)  # rendering and evaluation too, not only training
    timings = {}

    t = time.time()
    console.rule("[bold]1/5 rendering the face world (world A: train and held-out identities)")
    train, test = X.world_a_sets(cfg)
    timings["render_s"] = time.time() - t

    t = time.time()
    console.rule("[bold]2/5 training the UFE")
    model = X.train_or_load(cfg, root / "ufe", train)
    timings["train_ufe_s"] = time.time() - t

    t = time.time()
    console.rule("[bold]3/5 evaluating on held-out identities")
    matrices = X.evaluate_matrices(model, test, root)
    # The run's own copy of features.npz (`facefactors evaluate` reads it); copied rather than
    # evaluated twice, since the weak-classifier matrix takes minutes on a loaded CPU.
    shutil.copyfile(root / "features.npz", root / "ufe" / "features.npz")
    comps = X.composites_eval(model, test, cfg, root)
    timings["evaluate_s"] = time.time() - t

    t = time.time()
    console.rule("[bold]4/5 training the independent rater")
    rater = ensure_rater(root / "rater", "quick" if preset != "tiny" else "tiny", cfg.data.zoom, [f"data.cache={cfg.data.cache}", f"trainer.threads={cfg.trainer.threads}"])
    timings["train_rater_s"] = time.time() - t

    t = time.time()
    console.rule("[bold]5/5 automated user study")
    study = X.user_study(model, rater, test, n=1000 if preset != "tiny" else 40)
    timings["user_study_s"] = time.time() - t

    rows = ["| composite | L1 to truth | SSIM | L1 / reconstruction L1 |", "|---|---|---|---|"]
    rows += [f"| {k} | {v['l1']:.4f} | {v['ssim']:.3f} | {v.get('ratio_to_reconstruction_l1', 1.0):.2f} |" for k, v in comps.items()]
    sections = X._matrix_sections(matrices, tsne=True) + [
        ("Composites vs the true composite rendered by the world", "\n".join(rows)),
        ("Composite grid (Fig. 4: identity / expression / lighting sources, composite, reposed to 30 deg)", "![grid](composites_grid.png)"),
        ("Swaps (rows: A, B, A with B's identity / expression / lighting / pose)", "![swaps](swaps.png)"),
        ("Judge", X._judge_line(root / "rater")),
        *X.study_sections(study),
        ("Timings (seconds)", "\n".join(f"- {k}: {v:.0f}" for k, v in timings.items())),
        ("Next", f"- `facefactors evaluate {root / 'ufe'}` for the full metric suite\n- `facefactors ufe predict {root / 'ufe'} IMAGE...`\n- `facefactors ufe experiment NAME` for the six experiments of the paper"),
    ]
    report = X.write_report(root, f"facefactors demo: Universal Face Encoder on the face world ({preset})", sections,
                            {"matrices": matrices, "composites": comps, "user_study": study, "timings": timings})
    atomic_write_text(root / "README.txt", f"Open {report} (figures are next to it).\n")
    console.print(f"[bold green]demo report:[/] {report.resolve()}")
