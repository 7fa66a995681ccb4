"""The faces look like faces to a detector nobody here trained (issue 2, section 2): dlib's HOG
detector finds >= 90% of 128x128 frontal renders under non-extreme light, and its 68-landmark
predictor lands within 10% of the inter-ocular distance of our ground truth on average."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow



def test_dlib_finds_the_faces_and_their_landmarks():
    pytest.importorskip("dlib")
    from facefactors.world import FaceWorld, WorldConfig
    from facefactors.world.check import TARGET_ERROR, TARGET_RATE, run_check

    r = run_check(FaceWorld(WorldConfig(seed=0)), num=200, image_size=128, split="test")
    assert r.detection_rate >= TARGET_RATE, r
    assert r.landmark_error <= TARGET_ERROR, r


def test_the_check_can_fail():
    """Faces without their features (flat skin, no eyes, brows, lips) are not found: the check is not vacuous."""
    pytest.importorskip("dlib")
    import numpy as np

    from facefactors.world.check import load_dlib

    detector, _ = load_dlib()
    rng = np.random.default_rng(0)
    blank = (rng.uniform(0.3, 0.7, (128, 128, 3)) * 255).astype(np.uint8)
    assert len(detector(blank, 1)) == 0
