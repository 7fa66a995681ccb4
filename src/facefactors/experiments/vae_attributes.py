"""Smile and eyeglasses vectors by latent arithmetic, judged by an independent rater (issue 5).

The student study (paper 004, "Manipulating Face Attributes", Figs. 9-11) shows edited faces;
here the claim is measured. For the VAE, β-VAE (beta 2) and β-VAE (beta 5) of the ``tradeoff``
experiment: Delta z = mean z(smile) - mean z(neutral) (resp. eyeglasses yes - no) over the
training set; held-out faces without the attribute (test identities) are edited as
z + alpha * Delta z and rated by the rater of ``models/rater.py`` (a CNN trained on world ground
truth, never on VAE outputs):

* ``turned``: share of edited faces the rater calls smiling (wearing glasses), next to the same
  share for the unedited reconstruction (alpha 0) and for the real inputs;
* ``flipped`` (the headline): among faces whose reconstruction the rater calls *without* the
  attribute, the share the edit turns *with* it. ``turned`` alone credits the rater's false
  positives on blurry VAE output (a third of reconstructions were "with glasses" at alpha 0);
* identity: cosine similarity of the rater's identity embedding of the edit to the original
  input vs to another person's input (``own_closer``: share of faces where the own is closer);
* references: the share the rater calls smiling (with glasses) among held-out faces that are,
  and among their reconstructions (``seen_recon``). If the rater rarely sees the attribute on
  reconstructions of faces that have it, the VAE does not draw it (or the rater cannot judge VAE
  output); an exaggerated edit can still exceed ``seen_recon``, so it is a reference, not a bound.

The study edits with a few hand-picked alphas; we report the whole curve (``ALPHAS``) and, as the
summary, the smallest alpha whose ``flipped`` share is a majority (or the best one when none is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facefactors.edit.attribute_vectors import attribute_grid, attribute_vector, edit_images
from facefactors.edit.traversal import encode_dataset, save_png
from facefactors.experiments.vae import _table, train_variants, variant_config
from facefactors.train.vae import load_run
from facefactors.train.vae_data import face_world
from facefactors.utils.io import atomic_write_json, atomic_write_text

ALPHAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)  # a curve: at alpha 2 small VAEs rarely turn a face yet
EDITS = (("expression", "smile", "neutral"), ("eyeglasses", "yes", "no"))
MODELS = ("vae", "beta2", "beta5")


def get_rater(root: Path, rater_dir: str | None, image_size: int, preset: str, zoom: float = 1.0):
    """A trained rater: the one given, or one trained (once) at the VAE's image size and framing."""
    from facefactors.train.rater import ensure_rater

    path = rater_dir or root / "rater"  # a named folder without a trained rater gets one trained there
    if preset == "tiny":
        return ensure_rater(path, "tiny", zoom)
    # quick32 is the quick rater shaped for 32x32 images
    return ensure_rater(path, "quick32" if image_size == 32 else "quick", zoom, [f"model.image_size={image_size}", "trainer.threads=1"])


def held_out_faces(world, n: int):
    """(images (n, 3, S, S), labels) of test-split identities, never seen in training."""
    batches = [world.sample(torch.arange(s, min(n, s + 256)), split="test") for s in range(0, n, 256)]
    images = torch.cat([b.image for b in batches]).clamp(0, 1)
    labels = {k: torch.cat([b.labels[k] for b in batches]) for k in batches[0].labels}
    return images, labels


@torch.no_grad()
def principal_directions(images: torch.Tensor, k: int) -> torch.Tensor:
    """The top ``k`` principal directions (k, C*H*W) of images (N, C, H, W): the code of the best
    linear autoencoder with k latents, a reference for what k numbers can carry."""
    x = images.flatten(1).double()
    _, _, v = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return v[:k].float()


def attribute_pairs(world, factor: str, without: int, with_: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out faces rendered twice, without and with class ``with_`` of ``factor``,
    everything else the same (the world's own intervention): two (n, 3, S, S) batches."""
    idx = torch.arange(n)
    base = world.sample_params(idx, "test")
    x0, x1 = (world.render(base.replace(**world.draw_factor(factor, "test", idx, klass=torch.full((n,), k)))).image.clamp(0, 1) for k in (without, with_))
    return x0, x1


@torch.no_grad()
def matched_pairs(model, pairs: tuple[torch.Tensor, torch.Tensor], directions: torch.Tensor | None = None) -> dict:
    """Does the VAE carry the attribute at all? ``pairs`` from :func:`attribute_pairs`. Returns

    * ``reproduced``: the share of the pair's pixel difference that the difference of the two
      reconstructions (from the posterior means) reproduces, sum <r1 - r0, x1 - x0> / sum |x1 - x0|^2
      (1 = drawn fully, 0 = not at all);
    * ``probe``: held-out accuracy of a logistic regression telling the two renders apart from the
      posterior means (first half of the pairs to fit, second half to test; chance 0.5);
    * ``pixels``: the pair's mean sum of squared pixel differences (how big the attribute is);
    * ``linear``: with ``directions`` (k, C*H*W) orthonormal, e.g. :func:`principal_directions`
      with k = the latent size, the share of the difference inside their span: what the best
      linear autoencoder with k latents would reproduce.
    """
    from sklearn.linear_model import LogisticRegression

    x, n = pairs, len(pairs[0])
    mu = [model.encode(v)[0] for v in x]
    r = [torch.sigmoid(model.decode(m)) for m in mu]
    dx, dr = x[1] - x[0], r[1] - r[0]
    codes = torch.cat(mu).numpy()
    said = np.r_[np.zeros(n), np.ones(n)]
    fit = np.r_[np.arange(n // 2), n + np.arange(n // 2)]
    test = np.r_[np.arange(n // 2, n), n + np.arange(n // 2, n)]
    probe = LogisticRegression(max_iter=5000).fit(codes[fit], said[fit])
    energy = (dx * dx).sum().clamp_min(1e-12)
    out = {"reproduced": float((dr * dx).sum() / energy), "probe": float(probe.score(codes[test], said[test])), "pixels": float((dx * dx).sum((1, 2, 3)).mean())}
    if directions is not None:
        out["linear"] = float((dx.flatten(1) @ directions.T).pow(2).sum() / energy)
    return out


def _first_images(dataset, n: int) -> torch.Tensor:
    """The first ``n`` images of a VAE data set, (n, C, H, W) float in [0, 1]."""
    from facefactors.data.collate import collate

    return collate([dataset[i] for i in range(min(n, len(dataset)))])["image"]


@torch.no_grad()
def rate(rater, images: torch.Tensor, factor: str, cls: int) -> tuple[np.ndarray, torch.Tensor]:
    """(rater says class ``cls`` (N,) bool, identity embeddings (N, E)) at the rater's size."""
    size = rater.config.image_size
    x = images if images.shape[-1] == size else F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    said, emb = [], []
    for s in range(0, len(x), 256):
        logits, e = rater(x[s : s + 256])
        said.append(logits[factor].argmax(1) == cls)
        emb.append(e)
    return torch.cat(said).numpy(), torch.cat(emb)


def flipped(before: np.ndarray, after: np.ndarray) -> float:
    """Among items rated False ``before`` (N,) bool, the share rated True ``after``; NaN if none."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    return float(after[~before].mean()) if (~before).any() else float("nan")


def summarise(rows: list[dict], key: str = "flipped") -> dict[str, dict]:
    """Per "model/attribute": the row of the smallest alpha > 0 whose ``key`` share is a majority,
    or of the alpha with the largest share when none is (ties: the smaller alpha)."""
    out = {}
    for name in dict.fromkeys(f"{r['model']}/{r['attribute']}" for r in rows):
        mine = sorted((r for r in rows if f"{r['model']}/{r['attribute']}" == name and r["alpha"] > 0), key=lambda r: r["alpha"])
        if not mine:
            continue
        share = [-1.0 if np.isnan(r.get(key, np.nan)) else r[key] for r in mine]
        best = max(range(len(mine)), key=lambda i: (share[i], -i))
        pick = next((r for r, v in zip(mine, share) if v > 0.5), mine[best])
        out[name] = {k: pick.get(k) for k in ("alpha", "turned", "flipped", "own_closer", "sim_own", "sim_other", "seen_recon")}
    return out


def attribute_experiment(
    out: Path,
    preset: str,
    overrides: list[str],
    rater_dir: str | None = None,
    num_faces: int = 200,
    models: list[str] | tuple[str, ...] = MODELS,
    alphas: list[float] | tuple[float, ...] = ALPHAS,
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    root = out.parent
    models, alphas = list(models), [float(a) for a in alphas]
    if 0.0 not in alphas:
        alphas = [0.0, *alphas]  # alpha 0 (the plain reconstruction) is the baseline of every row
    runs, dataset = train_variants(root, models, preset, overrides, return_dataset=True)
    cfg = variant_config(models[0], preset, overrides)
    rater = get_rater(root, rater_dir, cfg.model.image_size, preset, cfg.data.zoom).eval()
    world = face_world(cfg.data.world_seed, cfg.model.image_size, cfg.data.zoom)
    pool, pool_labels = held_out_faces(world, 4 * num_faces)
    description = dataset.description
    rows, vectors, carried, directions, pairs = [], {}, {}, {}, {}
    for name in models:
        model, mcfg, _ = load_run(runs[name].path, "cpu")
        codes, labels, _, _ = encode_dataset(model, dataset, max_items=len(dataset))
        for factor, with_c, without_c in EDITS:
            names = list(description[factor].class_names)
            pos, neg = names.index(with_c), names.index(without_c)
            vec = attribute_vector(codes, description, factor, labels[factor], with_c, without_c)
            vectors[f"{name}/{factor}"] = vec.to_dict()
            if mcfg.model.latent_dim not in directions:
                directions[mcfg.model.latent_dim] = principal_directions(_first_images(dataset, 4096), mcfg.model.latent_dim)
            if factor not in pairs:  # the same faces for every model
                pairs[factor] = attribute_pairs(world, factor, neg, pos, min(200, num_faces))
            carried[f"{name}/{factor}"] = matched_pairs(model, pairs[factor], directions[mcfg.model.latent_dim])
            idx = torch.nonzero(pool_labels[factor] == neg).flatten()[:num_faces]
            x, ids = pool[idx], pool_labels["identity"][idx]
            # Another person for every face: the next face with a different identity.
            other = torch.tensor([int(next((j for j in range(1, len(ids)) if ids[(i + j) % len(ids)] != ids[i]), 1)) for i in range(len(ids))])
            other_idx = (torch.arange(len(ids)) + other) % len(ids)
            said_real, emb_real = rate(rater, x, factor, pos)
            # References: how often the rater sees the attribute on real faces that have it, and on
            # their reconstructions (does the VAE draw it at all, can the rater judge VAE output).
            has = torch.nonzero(pool_labels[factor] == pos).flatten()[:num_faces]
            seen_real = float(rate(rater, pool[has], factor, pos)[0].mean())
            seen_recon = float(rate(rater, edit_images(model, pool[has], vec.delta, [0.0])[:, 0], factor, pos)[0].mean())
            edited = edit_images(model, x, vec.delta, alphas)  # (N, K, 3, S, S)
            save_png(attribute_grid(model, x[:6], vec.delta, alphas), out / f"{name}_{factor}_grid.png")
            ratings = [rate(rater, edited[:, k], factor, pos) for k in range(len(alphas))]  # (said, embedding) per alpha
            said_recon = ratings[alphas.index(0.0)][0]  # alpha 0: the reconstruction
            for k, alpha in enumerate(alphas):
                said, emb = ratings[k]
                own = (emb * emb_real).sum(1)
                oth = (emb * emb_real[other_idx]).sum(1)
                rows.append({
                    "model": name, "attribute": f"{factor}={with_c}", "alpha": alpha, "n": len(idx),
                    "turned": float(said.mean()), "flipped": flipped(said_recon, said), "real_rate": float(said_real.mean()),
                    "sim_own": float(own.mean()), "sim_other": float(oth.mean()), "own_closer": float((own > oth).float().mean()),
                    "seen_real": seen_real, "seen_recon": seen_recon, "vector_from": vec.n_with + vec.n_without,
                })
    cols = [("model", "model", ""), ("attribute", "attribute", ""), ("alpha", "alpha", ".1f"), ("n", "faces", "d"), ("turned", "rater: has it", ".2f"),
            ("flipped", "turned from recon", ".2f"),
            ("real_rate", "on real inputs", ".2f"), ("seen_real", "real with it", ".2f"), ("seen_recon", "recon with it", ".2f"),
            ("sim_own", "id sim own", ".3f"), ("sim_other", "id sim other", ".3f"), ("own_closer", "own closer", ".2f")]
    report = (
        f"# Attribute vectors by latent arithmetic, judged by the rater ({preset} preset)\n\n"
        "Held-out faces (test identities) without the attribute, edited as z + alpha * Delta z; "
        "alpha 0 is the plain reconstruction. 'rater: has it' = share the rater calls smiling / "
        "with eyeglasses; 'on real inputs' = the same on the unedited inputs (false-positive rate). "
        "Identity: cosine similarity of the rater's identity embedding of the edit to its own input "
        "vs to another person's input. 'real with it' / 'recon with it': share the rater calls "
        "smiling / with eyeglasses among held-out faces that have it, and among their reconstructions "
        "(does the VAE draw it; compare with 'rater: has it' at alpha 0). 'turned from recon': among faces whose reconstruction the rater "
        "calls without it, the share the edit turns (the headline: it discounts the rater's false "
        "positives on VAE output).\n\n" + _table(rows, cols) + "\n"
        + "".join(f"![{m} {f}]({m}_{f}_grid.png) " for m in models for f, _, _ in EDITS) + "\n\n"
        "## Does the VAE carry the attribute? Matched pairs\n\n"
        "Held-out faces rendered without and with the attribute, all else the same. 'reproduced': share of the pair's "
        "pixel difference that the difference of their reconstructions reproduces; 'probe': held-out accuracy of a "
        "logistic regression telling the two renders apart from the posterior means (chance 0.5); 'pixels': the pair's "
        "sum of squared pixel differences; 'linear': the share inside the span of the training images' top principal "
        "directions, as many as the VAE has latents (what the best linear autoencoder of that size would reproduce).\n\n"
        + _table([{"model/attribute": k, **v} for k, v in carried.items()],
                 [("model/attribute", "model/attribute", ""), ("reproduced", "reproduced", ".3f"), ("probe", "probe", ".3f"), ("pixels", "pixels", ".2f"), ("linear", "linear", ".3f")]) + "\n"
    )
    atomic_write_text(out / "report.md", report)
    result = {"rows": rows, "vectors": vectors, "summary": summarise(rows), "matched_pairs": carried}
    atomic_write_json(out / "results.json", result)
    return result
