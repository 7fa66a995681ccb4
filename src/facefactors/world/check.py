"""Do the world's faces look like faces to a detector nobody here trained?

dlib's HOG frontal face detector and its 68-landmark shape predictor (iBUG 300-W, the same
landmark semantics as landmarks.py; model files from the ``face_recognition_models`` package)
are run on 128 x 128 frontal renders (|yaw| <= 15 degrees) under non-extreme light. Reported:
the detection rate, and the mean distance between dlib's landmarks and our ground truth,
normalised by the inter-ocular distance (outer eye corners 36/45), the usual 300-W error.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import torch

from facefactors.utils.errors import UserError

TARGET_RATE = 0.90
TARGET_ERROR = 0.10


@dataclass
class CheckResult:
    detection_rate: float  # share of renders with a detected face
    landmark_error: (
        float  # mean dlib-vs-ground-truth distance / inter-ocular distance, over detected faces
    )
    num_images: int
    per_image_error: np.ndarray  # (N,) NaN where no face was found

    @property
    def passed(self) -> bool:
        return self.detection_rate >= TARGET_RATE and self.landmark_error <= TARGET_ERROR


def model_dir() -> str:
    """Folder of the dlib model files, found without importing face_recognition_models
    (its __init__ imports pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "face_recognition_models is not installed; install it with `pip install face-recognition-models` (and dlib-bin) to run the face check"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "models")


def load_dlib():
    try:
        import dlib
    except ImportError:
        raise UserError(
            "dlib is not installed; install it with `pip install dlib-bin` to run the face check"
        ) from None
    path = os.path.join(model_dir(), "shape_predictor_68_face_landmarks.dat")
    if not os.path.isfile(path):
        raise UserError(
            f"{path}: dlib's 68-landmark model is missing; reinstall face-recognition-models"
        )
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


def frontal_params(world, num: int, split: str = "test", start: int = 0):
    """Parameters of ``num`` frontal (|yaw| <= 15) samples under non-extreme light: the world's own
    draws with the yaw bucket and, where extreme, the light class re-drawn from allowed values."""
    from facefactors.world.lighting import LIGHT_NAMES, is_extreme

    p = world.sample_params(range(start, start + num), split)
    buckets = torch.tensor(world.config.yaw_buckets)
    ok_b = torch.nonzero(buckets.abs() <= 15).flatten()
    idx = torch.arange(start, start + num)
    pose = world.draw_factor("pose", split, idx, klass=ok_b[idx % len(ok_b)])
    p = p.replace(**pose)
    mild = torch.tensor(
        [k for k in range(len(LIGHT_NAMES)) if not bool(is_extreme(torch.tensor(k)))]
    )
    bad = is_extreme(p.light_class)
    light = world.draw_factor("lighting", split, idx, klass=mild[idx % len(mild)])
    return p.replace(
        **{
            k: torch.where(bad.reshape(-1, *([1] * (v.dim() - 1))), v, getattr(p, k))
            for k, v in light.items()
        }
    )


def run_check(
    world=None,
    num: int = 200,
    image_size: int = 128,
    split: str = "test",
    batch_size: int = 50,
    progress: bool = False,
) -> CheckResult:
    from facefactors.world.config import WorldConfig
    from facefactors.world.world import FaceWorld

    world = world or FaceWorld(WorldConfig())
    detector, predictor = load_dlib()
    import dlib

    errors = np.full(num, np.nan)
    found = np.zeros(num, dtype=bool)
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("dlib check", total=num)
    for s in range(0, num, batch_size):
        n = min(batch_size, num - s)
        batch = world.render(
            frontal_params(world, n, split, s), image_size=image_size, ground_truth=True
        )
        imgs = (batch.image.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        gt = (
            (batch.landmarks.numpy() + 1) * 0.5 * image_size
        ) - 0.5  # to pixel coordinates (centre of pixel 0 = 0)
        for i in range(n):
            img = np.ascontiguousarray(imgs[i])
            dets = detector(img, 1)
            if len(dets) == 0:
                continue
            # the detection nearest the ground-truth face centre
            c = gt[i].mean(0)
            det = min(
                dets,
                key=lambda r: (
                    (0.5 * (r.left() + r.right()) - c[0]) ** 2
                    + (0.5 * (r.top() + r.bottom()) - c[1]) ** 2
                ),
            )
            shape = predictor(img, dlib.rectangle(det.left(), det.top(), det.right(), det.bottom()))
            pred = np.array(
                [[shape.part(k).x, shape.part(k).y] for k in range(68)], dtype=np.float64
            )
            iod = np.linalg.norm(gt[i, 36] - gt[i, 45])
            found[s + i] = True
            errors[s + i] = np.linalg.norm(pred - gt[i], axis=1).mean() / iod
        if bar is not None:
            bar.update(task, advance=n)
    if bar is not None:
        bar.stop()
    err = float(np.nanmean(errors)) if found.any() else float("inf")
    return CheckResult(float(found.mean()), err, num, errors)
