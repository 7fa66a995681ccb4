"""The face world: a procedural 3D morphable face model and its renderer front-end
(DESIGN.md "The face world").

``FaceWorld.sample_params`` draws every factor from its own counter-based stream
(seeding.py), so a sample is a pure function of (world seed, split, index) and one factor can be
re-drawn alone (samplers.intervene). ``FaceWorld.render`` is a pure function of a
``FaceParams``: expression flow -> neutral points, relief and albedo on the canonical grid
(Unsup3D, Wu et al. 2020, sec. 3.1: I = Pi(Lambda(a, d, l), d, w)), Lambertian shading in the
canonical view, z-buffer rasterisation of the posed height field, compositing over the
background, camera tone curve, blur and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facefactors.data.description import DatasetDescription, Factor
from facefactors.utils.errors import ConfigError
from facefactors.world import albedo as albedo_mod
from facefactors.world import expression as expr
from facefactors.world import imaging, lighting, surface
from facefactors.world.config import WorldConfig
from facefactors.world.identity import A, features, sample_identity
from facefactors.world.landmarks import canonical_landmarks
from facefactors.world.params import FaceParams, IdentityParams
from facefactors.world.seeding import Draws

AGE_CLASSES = ("young", "middle", "old")
GENDER_CLASSES = ("female", "male")
CAMERA_CLASSES = ("rgb", "nir")
FACTOR_STREAMS = (
    "identity",
    "expression",
    "lighting",
    "pose",
    "camera",
    "background",
    "hair",
    "eyeglasses",
    "noise",
)
# Each image's hair volume and length: its person's own (albedo) plus a uniform draw of this width,
# clamped to [0, 1]; so hair style, an "others" factor, tells people apart (scripts/ufe_hair_floor.py).
HAIR_SPREAD = 0.3


@dataclass
class WorldBatch:
    image: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    labels: dict[str, torch.Tensor]  # name -> (B,), long (categorical) or float (continuous)
    params: FaceParams
    coverage: torch.Tensor | None = None  # (B, 1, H, W) face coverage of each image pixel
    landmarks: torch.Tensor | None = None  # (B, 68, 2) image coordinates in [-1, 1], iBUG-68 order
    depth: torch.Tensor | None = None  # (B, 1, Hc, Wc) canonical depth
    albedo: torch.Tensor | None = None  # (B, 3, Hc, Wc) canonical albedo
    normal: torch.Tensor | None = None  # (B, 3, Hc, Wc) canonical normals (camera space)
    mask: torch.Tensor | None = None  # (B, 1, Hc, Wc) canonical mask (ground truth)


class FaceWorld:
    """A procedural face world; see the module docstring."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()

    # --- description ---------------------------------------------------------------------
    def describe(
        self, split: str = "train", num_identities: int | None = None, name: str | None = None
    ) -> DatasetDescription:
        """All factors of the world; the identity classes are the first ``num_identities`` of ``split``."""
        cfg = self.config
        n = cfg.split_sizes()[split] if num_identities is None else int(num_identities)
        off = cfg.split_offset(split)
        buckets = tuple(f"{b:g}" for b in cfg.yaw_buckets)
        factors = (
            Factor(
                "identity",
                "categorical",
                tuple(str(off + i) for i in range(max(n, 2))),
                description="global identity id",
            ),
            Factor("expression", "categorical", expr.EXPRESSIONS),
            Factor(
                "lighting", "categorical", lighting.LIGHT_NAMES, description="20 light directions"
            ),
            Factor("pose", "categorical", buckets, description="yaw bucket, degrees"),
            Factor("camera", "categorical", CAMERA_CLASSES, group="others"),
            Factor("age", "categorical", AGE_CLASSES, group="identity"),
            Factor("age_value", "continuous", group="identity"),
            Factor("gender", "categorical", GENDER_CLASSES, group="identity"),
            Factor("gender_value", "continuous", group="identity"),
            Factor("skin_tone", "continuous", group="identity"),
            Factor("eyeglasses", "categorical", ("no", "yes"), group="others"),
            Factor("yaw", "continuous", group="pose"),
            Factor("pitch", "continuous", group="pose"),
            Factor("roll", "continuous", group="pose"),
            Factor("expression_intensity", "continuous", group="expression"),
            Factor("ambient", "continuous", group="lighting"),
            Factor("light_x", "continuous", group="lighting"),
            Factor("light_y", "continuous", group="lighting"),
        )
        extra = {"world_seed": cfg.seed, "split": split}
        return DatasetDescription(name or f"world-{split}", factors, None, cfg.image_size, 3, extra)

    @property
    def description(self) -> DatasetDescription:
        return self.describe("train")

    # --- sampling ----------------------------------------------------------------------
    def identity(self, ids) -> IdentityParams:
        return sample_identity(self.config.seed, ids)

    def sample_params(self, indices, split: str = "train", identities=None) -> FaceParams:
        """Parameters of samples ``indices`` of ``split``; ``identities`` (local ids in the split) overrides the draw."""
        cfg = self.config
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        n_id = cfg.split_sizes()[split]
        if identities is None:
            local = Draws(cfg.seed, f"{split}/identity", idx.numpy(), 1).choice(n_id)[:, 0]
        else:
            local = (
                torch.as_tensor(identities, dtype=torch.long)
                .reshape(-1)
                .expand(idx.shape[0])
                .clone()
            )
            outside = local[(local < 0) | (local >= n_id)]
            if outside.numel():
                # past the split's end a local id would name another split's person (a test
                # identity in a training set): refuse rather than leak
                raise ConfigError(
                    f"identity {int(outside[0])} is outside the world's {split} split (local ids 0..{n_id - 1}); "
                    f"ask for fewer identities or raise WorldConfig.{split}_identities"
                )
        glob = local + cfg.split_offset(split)
        ident = self.identity(glob)
        fields = {"sample_index": idx, "identity": glob, "identity_label": local}
        fields.update({k: v for k, v in ident.as_dict().items() if k != "identity"})
        for factor in FACTOR_STREAMS[1:]:
            fields.update(self.draw_factor(factor, split, idx, ident=ident))
        return FaceParams(**fields)

    def draw_factor(
        self, factor: str, split: str, stream_index, klass=None, ident: IdentityParams | None = None
    ) -> dict:
        """Fields of one factor drawn from its stream at ``stream_index`` (B,); ``klass`` (B,) forces its class."""
        cfg = self.config
        idx = torch.as_tensor(stream_index, dtype=torch.long).reshape(-1)
        d = Draws(cfg.seed, f"{split}/{factor}", idx.numpy(), 32)
        b = idx.shape[0]

        def forced(drawn: torch.Tensor) -> torch.Tensor:
            # the class column is always consumed, so forcing a class leaves the factor's other draws alone
            return (
                drawn
                if klass is None
                else torch.as_tensor(klass).long().reshape(-1).expand(b).clone()
            )

        if factor == "expression":
            k = forced(d.choice(len(expr.EXPRESSIONS))[:, 0])
            lo, hi = cfg.intensity_range
            inten = (lo + (hi - lo) * d.u(1)[:, 0]) * (k != 0).float()
            proto = expr.prototypes()[k]  # (B, E)
            jitter = (d.u(len(expr.BLENDSHAPES)) - 0.5) * 0.16 * (proto > 0).float()
            w = (proto * inten[:, None] + jitter * inten[:, None]).clamp(0, 1.2)
            return {"expression_weights": w, "expression": k.clone(), "expression_intensity": inten}
        if factor == "lighting":
            light, k = lighting.sample_light(
                d.u(5),
                None if klass is None else torch.as_tensor(klass).long().reshape(-1).expand(b),
            )
            return {"light": light, "light_class": k.clone(), "sh": lighting.light_to_sh(light)}
        if factor == "pose":
            nb = len(cfg.yaw_buckets)
            k = forced(d.choice(nb)[:, 0])
            u = d.u(3)
            yaw = (
                torch.tensor(cfg.yaw_buckets, dtype=torch.float32)[k]
                + (2 * u[:, 0] - 1) * cfg.yaw_jitter
            )
            pitch = (2 * u[:, 1] - 1) * cfg.pitch_range
            roll = (2 * u[:, 2] - 1) * cfg.roll_range
            return {"pose": torch.stack([yaw, pitch, roll], -1), "pose_bucket": k.clone()}
        if factor == "camera":
            k = forced((d.u(1)[:, 0] < cfg.nir_probability).long())
            return {"camera": k}
        if factor == "background":
            return {"background": imaging.sample_background(d.u(10))}
        if factor == "hair":
            if ident is None:
                raise ValueError(
                    "draw_factor('hair') needs the identity (hair style varies around the person's own)"
                )
            u = d.u(4)
            vol = (ident.albedo[:, A["hair_volume"]] + HAIR_SPREAD * (u[:, 0] - 0.5)).clamp(0, 1)
            length = (ident.albedo[:, A["hair_length"]] + HAIR_SPREAD * (u[:, 1] - 0.5)).clamp(0, 1)
            fringe = u[:, 2] * (u[:, 2] > 0.6).float()
            return {"hair": torch.stack([vol, length, fringe, u[:, 3]], -1)}
        if factor == "eyeglasses":
            k = forced((d.u(1)[:, 0] < cfg.eyeglasses_probability).long())
            return {"eyeglasses": k, "glasses_style": d.u(3)}
        if factor == "noise":
            u = d.u(3)
            std = cfg.noise_max * u[:, 0] ** 2
            sig = cfg.blur_max * u[:, 1] * (u[:, 1] > 0.5).float()
            return {"noise": torch.stack([std, sig], -1), "noise_seed": (u[:, 2] * 2**31).long()}
        raise ValueError(f"unknown factor stream {factor!r}; one of {list(FACTOR_STREAMS)}")

    def sample(
        self,
        indices,
        split: str = "train",
        image_size: int | None = None,
        ground_truth: bool = False,
    ) -> WorldBatch:
        return self.render(
            self.sample_params(indices, split), image_size=image_size, ground_truth=ground_truth
        )

    # --- rendering ---------------------------------------------------------------------
    def canonical(self, p: FaceParams, size: int):
        """Canonical maps of the expressed faces: depth (B,1,S,S), albedo (B,3,S,S), mask (B,1,S,S), features."""
        from facefactors.render.camera import image_grid

        b = len(p)
        grid = (
            image_grid(size, size).reshape(1, size * size, 2).expand(b, -1, -1)
        )  # expressed points p
        f = features(p.shape)
        w = p.expression_weights
        n, gap, m = expr.backward_points(grid, w, f, grid_size=size)
        x, y = n[..., 0].reshape(b, size, size), n[..., 1].reshape(b, size, size)
        gap = gap.reshape(b, size, size)
        m = m.reshape(b, size, size, 2)
        px = 2.0 / size
        r, mask, regions = surface.relief(x, y, f, p.hair, p.albedo[:, A["hairline"]], px)
        mx, my_ = m[..., 0], m[..., 1]
        smile = w[:, expr.W["smile"]][:, None, None]
        r = (
            r
            + 0.035 * smile * surface.gauss(mx.abs(), my_, 0.30, 0.15, 0.12, 0.1) * regions["face"]
        )
        r = r - 0.06 * gap * regions["face"]
        alb = albedo_mod.paint(x, y, px, f, p, regions, gap, m)
        gx, gy = grid[..., 0].reshape(b, size, size), grid[..., 1].reshape(b, size, size)
        alb = albedo_mod.paint_eyeglasses(alb, gx, gy, f, p.eyeglasses, p.glasses_style, px)
        return surface.to_depth(r, self.config.fov_deg), alb, mask[:, None], f

    def render(
        self, params: FaceParams, image_size: int | None = None, ground_truth: bool = False
    ) -> WorldBatch:
        """Images (B, 3, H, W) in [0, 1] and labels of ``params``; with ``ground_truth`` also the
        landmarks (B, 68, 2) and canonical depth/albedo/normal/mask."""
        from facefactors.render.rasterize import rasterize_height_field
        from facefactors.render.shading import depth_to_normal, lambertian

        cfg = self.config
        size = int(image_size or cfg.image_size)
        full = cfg.framed_size(size)  # the whole frame; the image is its centre (zoom)
        csize = max(full, int(cfg.canonical_size or full))
        p = params
        depth, alb, cmask, f = self.canonical(p, csize)
        normal = depth_to_normal(depth, cfg.fov_deg)
        shaded = alb * lambertian(normal, p.light)
        view = torch.cat([p.pose, torch.zeros(len(p), 3)], -1)
        raster = rasterize_height_field(
            depth, shaded, cmask, view, (full, full), cfg.fov_deg, cfg.supersample
        )
        img = raster.image + (1 - raster.mask) * imaging.background(p.background, full, full)
        img = imaging.tone(img, p.camera)
        # blur and noise are the camera's, per output pixel: the same at every zoom
        img = imaging.blur(img, p.noise[:, 1] * size / 64)
        img = imaging.add_noise(img, p.noise[:, 0], p.noise_seed, p.camera).clamp(0, 1)
        batch = WorldBatch(
            image=self._frame(img, size).contiguous(),
            labels=self.labels(p),
            params=p,
            coverage=self._frame(raster.mask, size),
        )
        if ground_truth:
            batch.landmarks = self._framed_points(self.landmarks(p, depth, f), size)
            batch.depth, batch.albedo, batch.normal, batch.mask = (
                depth,
                alb,
                normal,
                cmask,
            )
        return batch

    def _frame(self, maps: torch.Tensor, size: int) -> torch.Tensor:
        """The central ``size`` x ``size`` pixels of full-frame maps (B, C, F, F) (``zoom``)."""
        m = (maps.shape[-1] - size) // 2
        return maps[..., m : m + size, m : m + size]

    def _framed_points(self, points: torch.Tensor, size: int) -> torch.Tensor:
        """Normalised coordinates (..., 2) in the full frame -> in the framed image (``zoom``)."""
        return points * (self.config.framed_size(size) / size)

    def _project_canonical(
        self, p: FaceParams, points: torch.Tensor, depth: torch.Tensor
    ) -> torch.Tensor:
        """Canonical points (B, N, 2) on the surface ``depth`` (B, 1, S, S) -> posed image coordinates (B, N, 2)."""
        from facefactors.render.camera import project, transform_points

        d = F.grid_sample(
            depth,
            points[:, :, None, :],
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        d = d[:, 0, :, 0]  # (B, N) surface depth under each point
        t = math.tan(math.radians(self.config.fov_deg) / 2)
        pts = torch.stack(
            [points[..., 0] * t * d, points[..., 1] * t * d, d], -1
        )  # (B, N, 3), d K^-1 (u, v, 1)
        view = torch.cat([p.pose, torch.zeros(len(p), 3)], -1)
        return project(transform_points(pts, view), self.config.fov_deg)

    def landmarks(self, p: FaceParams, depth: torch.Tensor, f=None) -> torch.Tensor:
        """Image-space landmarks (B, 68, 2): canonical -> expression flow -> surface depth -> posed -> projected."""
        f = features(p.shape) if f is None else f
        can = expr.forward_points(canonical_landmarks(f), p.expression_weights, f)  # (B, 68, 2)
        return self._project_canonical(p, can, depth)

    def expression_flow(
        self, a: FaceParams, b: FaceParams, image_size: int | None = None, space: str = "image"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth 2-D flow from expression ``a`` to expression ``b`` of the same faces.

        ``space="canonical"``: (B, 2, S, S) displacement of every canonical point of a (its
        expressed position in b minus its position in a), mask = a's canonical mask.
        ``space="image"``: (B, 2, H, W) displacement of every pixel of a's render to where the
        same surface point is drawn in b's render (b's pose may differ), mask = a's coverage.
        Coordinates are normalised image units ([-1, 1], x right, y down).
        """
        if not torch.equal(a.identity, b.identity):
            raise ValueError("expression_flow: a and b must show the same identities (row by row)")
        if space not in ("image", "canonical"):
            raise ValueError(f"space must be 'image' or 'canonical', got {space!r}")
        from facefactors.render.camera import image_grid
        from facefactors.render.rasterize import rasterize_height_field

        size = int(image_size or self.config.image_size)
        full = self.config.framed_size(size) if space == "image" else size
        csize = max(full, int(self.config.canonical_size or full))
        n = len(a)
        depth_a, _, mask_a, f = self.canonical(a, csize)
        if space == "canonical":
            pts = image_grid(csize, csize).reshape(1, -1, 2).expand(n, -1, -1)
            flow = expr.canonical_flow(pts, a.expression_weights, b.expression_weights, f)
            return flow.reshape(n, csize, csize, 2).permute(0, 3, 1, 2), mask_a
        depth_b, _, _, _ = self.canonical(b, csize)
        view = torch.cat([a.pose, torch.zeros(n, 3)], -1)
        raster = rasterize_height_field(
            depth_a,
            mask_a,
            mask_a,
            view,
            (full, full),
            self.config.fov_deg,
            self.config.supersample,
        )
        uv = raster.canonical_uv.permute(0, 2, 3, 1).reshape(
            n, -1, 2
        )  # (B, H*W, 2) canonical point per pixel
        moved = uv + expr.canonical_flow(uv, a.expression_weights, b.expression_weights, f)
        target = self._project_canonical(b, moved, depth_b)  # (B, H*W, 2)
        pixels = image_grid(full, full).reshape(1, -1, 2)
        on = (raster.mask > 0.5).reshape(n, -1, 1)
        flow = torch.where(on, target - pixels, torch.zeros_like(target))
        flow = self._framed_points(flow, size)  # a displacement scales as the coordinates do
        flow = flow.reshape(n, full, full, 2).permute(0, 3, 1, 2)
        return self._frame(flow, size), self._frame(raster.mask, size)

    def labels(self, p: FaceParams) -> dict[str, torch.Tensor]:
        age_cls = (p.age_value * 3).long().clamp(0, 2)
        return {
            "identity": p.identity_label.long(),
            "expression": p.expression.long(),
            "lighting": p.light_class.long(),
            "pose": p.pose_bucket.long(),
            "camera": p.camera.long(),
            "age": age_cls,
            "age_value": p.age_value.float(),
            "gender": (p.gender_value > 0.5).long(),
            "gender_value": p.gender_value.float(),
            "skin_tone": p.skin_tone.float(),
            "eyeglasses": p.eyeglasses.long(),
            "yaw": p.pose[:, 0].float(),
            "pitch": p.pose[:, 1].float(),
            "roll": p.pose[:, 2].float(),
            "expression_intensity": p.expression_intensity.float(),
            "ambient": p.light[:, 0].float(),
            "light_x": p.light[:, 2].float(),
            "light_y": p.light[:, 3].float(),
        }
