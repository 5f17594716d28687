"""Rasterise one letter of one font face and distort it into a 32x32 sample.

Pixel convention: white ink on black, i.e. background 0 and full ink 255 (uint8), so that
zero padding is background.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

U8 = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RenderParams:
    """Every knob of the renderer; recorded in the manifest.

    Attributes:
        image_size: side of the output images (pixels).
        work_size: side of the canvas the distortions run on (2x the output, then box-filtered).
        font_size: pixel size the glyphs are rasterised at before normalisation.
        glyph_box: fraction of ``work_size`` the longer side of a glyph's ink box is scaled to
            (aspect ratio kept), before the affine distortion.
        rotation_deg: rotation drawn uniformly from +-this many degrees.
        shear: horizontal shear factor drawn uniformly from +-this.
        scale_min: smallest per-axis scale factor (anisotropic; x and y drawn independently).
        scale_max: largest per-axis scale factor.
        translate: translation drawn uniformly from +-this fraction of the side, per axis.
        stroke_probs: probabilities of (thin: 3x3 min filter, none, 3x3 max filter, 5x5 max
            filter) applied on the work canvas; thinning is skipped if it would erase half
            the ink, thickening if it would ink more than half of the glyph's box.
        images_per_class: samples rendered per letter.
    """

    image_size: int = 32
    work_size: int = 64
    font_size: int = 72
    glyph_box: float = 0.74
    rotation_deg: float = 12.0
    shear: float = 0.2
    scale_min: float = 0.85
    scale_max: float = 1.1
    translate: float = 0.06
    stroke_probs: tuple[float, float, float, float] = (0.25, 0.35, 0.3, 0.1)
    images_per_class: int = 20

    def to_dict(self) -> dict[str, object]:
        """JSON-ready copy of the parameters."""
        return asdict(self)


UNDISTORTED = RenderParams(
    rotation_deg=0.0, shear=0.0, scale_min=1.0, scale_max=1.0, translate=0.0,
    stroke_probs=(0.0, 1.0, 0.0, 0.0),
)  # fmt: skip


@lru_cache(maxsize=8)
def load_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    """Open a face with Pillow's FreeType, basic layout (one code point, one glyph)."""
    return ImageFont.truetype(path, size=size, index=index, layout_engine=ImageFont.Layout.BASIC)


def rasterise(font: ImageFont.FreeTypeFont, code_point: int) -> U8 | None:
    """The ink of one character cropped to its bounding box, or None if it draws nothing.

    Returns:
        uint8 array (h, w), ink 255 on background 0.
    """
    text = chr(code_point)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(canvas).text((1 - left, 1 - top), text, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return None
    ink = np.asarray(canvas.crop(box), dtype=np.uint8)
    return ink if int(ink.sum()) >= 255 * 4 else None


def normalise(ink: U8, params: RenderParams) -> U8:
    """Scale a cropped glyph so its longer side fills ``glyph_box`` and centre it.

    Returns:
        uint8 array (work_size, work_size).
    """
    height, width = ink.shape
    side = params.work_size
    factor = params.glyph_box * side / max(height, width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    glyph = Image.fromarray(ink).resize((new_w, new_h), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(glyph, ((side - new_w) // 2, (side - new_h) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def render_base(path: str, index: int, code_point: int, params: RenderParams) -> U8 | None:
    """Rasterise and normalise one letter of one face; None when the face draws nothing."""
    ink = rasterise(load_font(path, index, params.font_size), code_point)
    return None if ink is None else normalise(ink, params)


def downsample(work: U8, params: RenderParams) -> U8:
    """Box-filter a work canvas down to ``image_size``; uint8 (image_size, image_size)."""
    size = (params.image_size, params.image_size)
    return np.asarray(Image.fromarray(work).resize(size, Image.Resampling.BOX), dtype=np.uint8)


def binary_mask(base: U8, params: RenderParams) -> BoolArray:
    """Ink mask of a normalised glyph at output resolution; bool (image_size, image_size)."""
    return downsample(base, params) >= 128


def _affine_inverse(rng: np.random.Generator, params: RenderParams) -> tuple[float, ...]:
    """Random affine about the canvas centre, as Pillow's output-to-input coefficients."""
    theta = math.radians(rng.uniform(-params.rotation_deg, params.rotation_deg))
    shear = rng.uniform(-params.shear, params.shear)
    sx, sy = rng.uniform(params.scale_min, params.scale_max, size=2)
    tx, ty = rng.uniform(-params.translate, params.translate, size=2) * params.work_size
    cos, sin = math.cos(theta), math.sin(theta)
    rotate = np.array([[cos, -sin], [sin, cos]])
    forward = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    inverse = np.linalg.inv(forward)
    centre = np.full(2, params.work_size / 2.0)
    offset = centre - inverse @ (centre + np.array([tx, ty]))
    return (
        float(inverse[0, 0]), float(inverse[0, 1]), float(offset[0]),
        float(inverse[1, 0]), float(inverse[1, 1]), float(offset[1]),
    )  # fmt: skip


_MAX_FILL = 0.5  # thickening that inks more of the glyph's box than this would fill counters


def _fill(image: Image.Image) -> float:
    """Fraction of the ink bounding box of ``image`` that is ink (>= 128)."""
    box = image.getbbox()
    if box is None:
        return 0.0
    return float((np.asarray(image.crop(box), dtype=np.uint8) >= 128).mean())


def distort(base: U8, rng: np.random.Generator, params: RenderParams) -> U8:
    """One random sample of a normalised glyph: stroke width, affine, then downsampling.

    Args:
        base: uint8 (work_size, work_size) from :func:`render_base`.
        rng: the generator every random draw comes from.
        params: distortion ranges.

    Returns:
        uint8 array (image_size, image_size), ink high.
    """
    image = Image.fromarray(base)
    stroke = int(rng.choice(4, p=np.asarray(params.stroke_probs, dtype=np.float64)))
    if stroke == 0:
        thinner = image.filter(ImageFilter.MinFilter(3))
        if np.asarray(thinner, dtype=np.float64).sum() >= 0.5 * base.astype(np.float64).sum():
            image = thinner
    elif stroke >= 2:
        thicker = image.filter(ImageFilter.MaxFilter(2 * stroke - 1))
        if _fill(thicker) <= _MAX_FILL:
            image = thicker
    coefficients = _affine_inverse(rng, params)
    side = params.work_size
    image = image.transform(
        (side, side), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR, fillcolor=0
    )
    return downsample(np.asarray(image, dtype=np.uint8), params)
