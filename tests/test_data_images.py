"""Image decoding: every bad-input case of issue 2 section 4 gets a clear DataError or a noted conversion."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from facefactors.data.images import ConversionNotes, crop_resize, load_image
from facefactors.utils.errors import DataError, UserError


def _rgb(h=16, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16(arr: np.ndarray, path, color_type: int):
    """A 16-bit PNG written by hand (Pillow cannot write 48-bit RGB)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_rgb_png_exact_values_and_layout(tmp_path):
    a = _rgb(8, 12)
    Image.fromarray(a).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", (8, 12))
    assert x.dtype == torch.float32 and x.shape == (3, 8, 12)
    # channel-first, row = y, column = x: a transposed or channel-swapped layout fails here
    assert torch.equal(x, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_a_data_error_naming_it(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    Image.fromarray(_rgb(64, 64)).save(good)
    bad = tmp_path / f"bad{suffix}"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"bad\S*: cannot decode image \(truncated\?\).*remove or replace it"):
        load_image(bad, 64)
    assert "\n" not in _msg(lambda: load_image(bad, 64))


def _msg(fn):
    try:
        fn()
    except DataError as e:
        return str(e)
    raise AssertionError("no DataError")


def test_garbage_and_empty_and_missing_files(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image" * 20)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="junk.png: cannot decode"):
        load_image(tmp_path / "junk.png", 16)
    with pytest.raises(DataError, match="empty.jpg: cannot decode"):
        load_image(tmp_path / "empty.jpg", 16)
    with pytest.raises(DataError, match="nothere.png: image file not found"):
        load_image(tmp_path / "nothere.png", 16)
    (tmp_path / "faces.png").mkdir()
    with pytest.raises(DataError, match="faces.png: is a folder, not an image"):
        load_image(tmp_path / "faces.png", 16)


def test_grayscale_converted_with_one_note_per_dataset(tmp_path):
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for i in range(3):
        Image.fromarray(g, "L").save(tmp_path / f"g{i}.png")
    notes = ConversionNotes("faces")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        xs = [load_image(tmp_path / f"g{i}.png", 16, notes=notes) for i in range(3)]
    grey_notes = [w for w in rec if "grayscale" in str(w.message)]
    assert len(grey_notes) == 1 and "g0.png" in str(grey_notes[0].message)
    assert notes.counts["grayscale"] == 3
    x = xs[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0], torch.from_numpy(g).float() / 255)


def test_rgba_composited_over_black(tmp_path):
    a = np.zeros((4, 4, 4), dtype=np.uint8)
    a[..., :3] = 200
    a[:2, :, 3] = 255  # top half opaque
    a[2:, :, 3] = 0  # bottom half fully transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    notes = ConversionNotes()
    with pytest.warns(UserWarning, match="a.png: RGBA image with transparency"):
        x = load_image(tmp_path / "a.png", 4, notes=notes)
    assert x.shape == (3, 4, 4)
    assert torch.allclose(x[:, :2], torch.full((3, 2, 4), 200 / 255))
    assert torch.all(x[:, 2:] == 0)


def test_palette_and_cmyk_converted(tmp_path):
    a = _rgb(8, 8)
    Image.fromarray(a).convert("P").save(tmp_path / "p.png")
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    notes = ConversionNotes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = load_image(tmp_path / "p.png", 8, notes=notes)
        c = load_image(tmp_path / "c.jpg", 8, notes=notes)
    assert notes.counts == {"palette": 1, "CMYK": 1}
    assert p.shape == c.shape == (3, 8, 8)
    ref = torch.from_numpy(np.array(Image.fromarray(a).convert("P").convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(p, ref)


def test_16bit_grayscale_and_rgb_are_scaled_not_clipped(tmp_path):
    v = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    _png16(v, tmp_path / "g16.png", color_type=0)
    rgb = np.stack([v, 65535 - v, v // 2], -1)
    _png16(rgb, tmp_path / "c16.png", color_type=2)
    notes = ConversionNotes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = load_image(tmp_path / "g16.png", 8, notes=notes)
        c = load_image(tmp_path / "c16.png", 8, notes=notes)
    assert notes.counts["16-bit"] == 2
    # full range is preserved (clipping at 255 would give mostly ones)
    assert torch.allclose(g[0], torch.from_numpy(v / 65535.0).float(), atol=1 / 255)
    assert torch.allclose(c, torch.from_numpy(rgb / 65535.0).float().permute(2, 0, 1), atol=1 / 255)


def test_wrong_size_resize_and_error(tmp_path):
    # 30 wide x 20 tall: the centre 20x20 square is kept, then resized to 10x10
    a = np.zeros((20, 30, 3), dtype=np.uint8)
    a[:, 5:25] = 255  # the central square is white, the cropped side bands are black
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 10)
    assert x.shape == (3, 10, 10)
    assert torch.allclose(x, torch.ones_like(x), atol=1e-6)  # side bands were cropped, not squeezed in
    with pytest.raises(DataError, match=r"wide.png: image is 30x20 \(WxH\), expected 10x10"):
        load_image(tmp_path / "wide.png", 10, on_wrong_size="error")
    with pytest.raises(UserError, match="on_wrong_size"):
        load_image(tmp_path / "wide.png", 10, on_wrong_size="stretch")


def test_crop_resize_tall_keeps_centre():
    a = np.zeros((30, 10, 3), dtype=np.uint8)
    a[10:20] = 255
    out = np.asarray(crop_resize(Image.fromarray(a), (5, 5)))
    assert out.shape == (5, 5, 3) and out.min() == 255


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((4, 8, 3), dtype=np.uint8)  # stored landscape, 4 tall x 8 wide
    a[0, 0] = 255  # marker at the stored top-left
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "o.png", exif=exif)
    x = load_image(tmp_path / "o.png", (8, 4), on_wrong_size="error")
    assert x.shape == (3, 8, 4)  # displayed portrait
    # rotating 90 degrees clockwise moves the stored top-left pixel to the top-right
    assert x[0, 0, 3] == 1.0 and x[0, 0, 0] == 0.0
