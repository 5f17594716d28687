"""Rasterise one icon file to a square RGB image on mid-grey, and judge whether it is visible.

SVG files go through ``rsvg-convert`` (Debian ``librsvg2-bin``), PNG files through Pillow.
Icons are composited on mid-grey (128), not white: themes for dark panels draw white on
transparent, which would vanish on white, while dark icons would vanish on black.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

BACKGROUND = 128
"""Grey level every icon is composited on."""


class RasterError(RuntimeError):
    """An icon file cannot be rasterised (rasteriser missing, or the file is broken)."""


@dataclass(frozen=True)
class RenderParams:
    """Every knob of the renderer; recorded in the manifest.

    Attributes:
        image_size: side of the output images (pixels).
        source_size: icon size (px) whose theme directory is preferred (the freedesktop
            lookup picks the directory nearest to it).
        supersample: SVGs are rasterised at ``supersample * image_size`` and reduced.
        min_visible: an image must have at least this fraction of pixels that differ
            from the background by more than ``visible_level`` (any channel), else it is
            dropped as blank or too faint.
        visible_level: the grey-level difference that counts as visible.
        max_fill: an image whose opaque pixels (alpha > 0.9) are almost all one colour over
            more than this fraction of the canvas is a filled square: a placeholder.
    """

    image_size: int = 32
    source_size: int = 48
    supersample: int = 4
    min_visible: float = 0.04
    visible_level: int = 40
    max_fill: float = 0.9

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy of the parameters."""
        return asdict(self)


def rsvg_convert() -> str:
    """Path of ``rsvg-convert``.

    Raises:
        RasterError: if it is not installed.
    """
    path = shutil.which("rsvg-convert")
    if path is None:
        raise RasterError("rsvg-convert not found: apt-get install -y librsvg2-bin")
    return path


def _read_svg(path: str, side: int) -> Image.Image:
    """Rasterise an SVG to fit a ``side`` x ``side`` box (aspect ratio kept)."""
    done = subprocess.run(
        [rsvg_convert(), "--keep-aspect-ratio", "-w", str(side), "-h", str(side), "-f", "png",
         path],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip()
        raise RasterError(f"rsvg-convert failed on {path}: {message}")
    return Image.open(io.BytesIO(done.stdout))


def _square(img: Image.Image) -> Image.Image:
    """``img`` as RGBA, centred on a transparent square canvas of its longer side."""
    rgba = img.convert("RGBA")
    side = max(rgba.size)
    if rgba.size == (side, side):
        return rgba
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    canvas.paste(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
    return canvas


def rasterise(path: str, params: RenderParams) -> F32:
    """The icon at ``path`` as straight-alpha RGBA in [0, 1], (S, S, 4).

    Raises:
        RasterError: if the file cannot be read or rasterised.
    """
    side = params.image_size
    try:
        if path.lower().endswith(".svg"):
            img = _read_svg(path, side * params.supersample)
        else:
            img = Image.open(path)
        img.load()
        square = _square(img)
        # Pillow resizes RGBA with premultiplied alpha, so transparent pixels do not bleed.
        small = square.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=None)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise RasterError(f"cannot rasterise {path}: {error}") from error
    return np.asarray(small, dtype=np.float32) / 255.0


def on_grey(rgba: F32) -> U8:
    """Composite straight-alpha RGBA (S, S, 4) in [0, 1] on mid-grey; uint8 (3, S, S)."""
    alpha = rgba[..., 3:4]
    rgb = rgba[..., :3] * 255.0 * alpha + BACKGROUND * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(2, 0, 1))


def visible_fraction(image: U8, level: int) -> float:
    """Fraction of pixels of a (3, S, S) image that differ from the background by > ``level``."""
    diff = np.abs(image.astype(np.int16) - BACKGROUND).max(axis=0)
    return float((diff > level).mean())


def is_filled_square(rgba: F32, max_fill: float) -> bool:
    """Whether nearly the whole canvas is opaque and of one flat colour (a placeholder)."""
    opaque = rgba[..., 3] > 0.9
    if opaque.mean() <= max_fill:
        return False
    colours = rgba[..., :3][opaque]
    return bool(colours.std(axis=0).max() < 0.02)


def rejection(rgba: F32, image: U8, params: RenderParams) -> str | None:
    """Why a rendered icon is unusable (``None`` if it is usable).

    Args:
        rgba: the rasterised icon, (S, S, 4) in [0, 1].
        image: the same on mid-grey, uint8 (3, S, S).
        params: the thresholds.
    """
    visible = visible_fraction(image, params.visible_level)
    if visible < params.min_visible:
        return f"low contrast: {visible:.3f} of pixels visible on grey"
    if is_filled_square(rgba, params.max_fill):
        return "flat filled square (placeholder)"
    return None
