"""Safe image decoding for user photo folders (issue 2, section 4).

Every image that enters facefactors from disk passes through :func:`load_image`, which turns
whatever Pillow can open into one convention: a float32 tensor ``(3, H, W)`` in [0, 1].

* **Full decode.** Pillow opens lazily and, with ``ImageFile.LOAD_TRUNCATED_IMAGES``, silently
  pads truncated files with grey. We never set that flag; ``img.load()`` is forced inside the
  ``try`` so a truncated or corrupt file becomes a one-line :class:`DataError` naming it.
* **Colour modes.** Grayscale, palette, CMYK, 16-bit and alpha images are converted to 8-bit
  RGB. Each kind of conversion is reported once per data set (a :class:`ConversionNotes`
  shared by the data set), not once per image.
* **Orientation.** The EXIF orientation tag is applied (phones store portraits sideways).
* **Size.** A wrong-sized image is either rejected (``on_wrong_size="error"``; the message says
  the expected size) or centre-cropped to the target aspect ratio and resized with a
  Lanczos filter (``"resize"``): cropping first keeps faces undistorted.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from facefactors.utils.errors import DataError, UserError

log = logging.getLogger(__name__)

WrongSize = Literal["resize", "error"]

# Suffixes that count as images when a folder is scanned (compared lower-case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``64`` -> ``(64, 64)``; ``(H, W)`` passes through; anything else is a UserError."""
    if isinstance(image_size, (int, np.integer)):
        hw = (int(image_size), int(image_size))
    else:
        hw = tuple(int(s) for s in image_size)  # type: ignore[assignment]
    if len(hw) != 2 or min(hw) < 1:
        raise UserError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return hw  # type: ignore[return-value]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class ConversionNotes:
    """Reports each kind of conversion (grayscale, RGBA, resize, ...) once per data set.

    The first file of each kind is named; the count of later ones is kept for ``summary()``.
    """

    def __init__(self, dataset: str = "") -> None:
        self.dataset = dataset  # shown in the note so the user knows which folder is meant
        self.counts: dict[str, int] = {}

    def note(self, kind: str, path: Path, detail: str) -> None:
        first = kind not in self.counts
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if first:
            where = f" (data set {self.dataset})" if self.dataset else ""
            msg = f"{path}: {detail}; further {kind} images{where} get no further note"
            log.warning(msg)
            warnings.warn(msg, stacklevel=3)

    def summary(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items())) or "no conversions"


def _rawmode(tile) -> str:
    """The raw mode of a Pillow tile: a string for PNG, the first element of a tuple for JPEG."""
    args = tile[3] if len(tile) > 3 else ""
    return str(args[0] if isinstance(args, tuple) and args else args)


def _open_fully(path: Path) -> tuple[Image.Image, bool]:
    """Open and fully decode; returns the image and whether its source had 16 bits per channel."""
    try:
        img = Image.open(path)
        # Pillow reads 48-bit RGB PNGs as 8-bit RGB; the raw mode of the first tile tells.
        sixteen = any(";16" in _rawmode(t) for t in (img.tile or []))
        img.load()
    except FileNotFoundError:
        # The same loader serves folders with labels.csv and images named on the command line.
        raise DataError(f"{path}: image file not found; check the path (or remove the row from labels.csv)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image; name the image files inside it") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image is implausibly large ({e}); downscale it before use") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot decode image (truncated?) [{e}]; remove or replace it") from None
    return img, sixteen


def _to_rgb8(img: Image.Image, path: Path, sixteen: bool, notes: ConversionNotes | None) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, noting what was converted."""
    mode = img.mode

    def note(kind: str, detail: str) -> None:
        if notes is not None:
            notes.note(kind, path, detail)

    if mode == "RGB":
        if sixteen:
            note("16-bit", "16-bit RGB image reduced to 8 bits per channel")
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # High-bit-depth grayscale: scale by the container's range, not by clipping at 255.
        a = np.asarray(img).astype(np.float64)
        if mode == "F":
            scale = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        else:
            scale = 65535.0 if mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        a8 = np.clip(np.round(a / scale * 255.0), 0, 255).astype(np.uint8)
        note("16-bit", f"{mode} high-bit-depth grayscale image converted to 8-bit RGB")
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "P":
        # A palette may carry transparency; expand it so alpha is handled below.
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        note("palette", "palette image converted to RGB")
        if img.mode == "RGB":
            return img
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels carry arbitrary colour; composite over black so they are defined.
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        note("alpha", f"{mode} image with transparency composited over black and converted to RGB")
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode in ("L", "1"):
        note("grayscale", "grayscale image converted to RGB (channel repeated)")
        return img.convert("RGB")
    if mode == "CMYK":
        note("CMYK", "CMYK image converted to RGB")
        return img.convert("RGB")
    note(mode, f"{mode} image converted to RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot convert a {mode} image to RGB ({e}); save it as an RGB PNG or JPEG") from None


def crop_resize(img: Image.Image, size_hw: tuple[int, int]) -> Image.Image:
    """Centre-crop to the target aspect ratio, then resize (Lanczos) to ``(H, W)``."""
    h, w = size_hw
    W, H = img.size
    if W * h > H * w:  # too wide: trim left and right
        cw = max(1, round(H * w / h))
        left = (W - cw) // 2
        img = img.crop((left, 0, left + cw, H))
    elif W * h < H * w:  # too tall: trim top and bottom
        ch = max(1, round(W * h / w))
        top = (H - ch) // 2
        img = img.crop((0, top, W, top + ch))
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    return img


def load_image_uint8(
    path: str | Path,
    image_size: int | tuple[int, int],
    on_wrong_size: WrongSize = "resize",
    notes: ConversionNotes | None = None,
) -> np.ndarray:
    """Decode ``path`` into a uint8 array ``(H, W, 3)`` of the requested size (see module doc)."""
    if on_wrong_size not in ("resize", "error"):
        raise UserError(f"on_wrong_size must be 'resize' or 'error', got {on_wrong_size!r}")
    path = Path(path)
    size_hw = as_hw(image_size)
    img, sixteen = _open_fully(path)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception as e:  # noqa: BLE001 -- a malformed EXIF block must not hide the picture's own error message
        raise DataError(f"{path}: malformed EXIF data ({e}); re-save the image without EXIF") from None
    img = _to_rgb8(img, path, sixteen, notes)
    if img.size != (size_hw[1], size_hw[0]):
        if on_wrong_size == "error":
            raise DataError(
                f"{path}: image is {img.size[0]}x{img.size[1]} (WxH), expected {size_hw[1]}x{size_hw[0]}; "
                "resize your images or use on_wrong_size='resize'"
            )
        if notes is not None:
            notes.note("resized", path, f"image {img.size[0]}x{img.size[1]} centre-cropped and resized to {size_hw[1]}x{size_hw[0]}")
        img = crop_resize(img, size_hw)
    return np.array(img, dtype=np.uint8)  # (H, W, 3), a writable copy


def uint8_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [0, 1]."""
    if not arr.flags.writeable or not arr.flags.c_contiguous:  # memory maps and Pillow views are read-only
        arr = np.array(arr)
    t = torch.from_numpy(arr)
    return t.movedim(-1, -3).to(torch.float32).div_(255.0)


def load_image(
    path: str | Path,
    image_size: int | tuple[int, int],
    on_wrong_size: WrongSize = "resize",
    notes: ConversionNotes | None = None,
) -> torch.Tensor:
    """Decode an image file into float32 ``(3, H, W)`` in [0, 1].

    Raises :class:`DataError` (one line, naming the file) for unreadable, truncated or corrupt
    files, and for a wrong size when ``on_wrong_size="error"``. Pass a :class:`ConversionNotes`
    to get one note per kind of conversion; without it conversions happen silently.
    """
    return uint8_to_tensor(load_image_uint8(path, image_size, on_wrong_size, notes))  # (3, H, W)
