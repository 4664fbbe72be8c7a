"""Read a painted image back into words: background, shape color, shape and count.

Simple measures, independent of the model: the background is the median color of the
border; the shapes are the pixels far from it; their color is the palette color most of
them are nearest to; the shape is the template (circle, square, triangle, diamond) that
best overlaps the largest shape inside its bounding box; the count is the number of
connected shapes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scenes import BACKGROUNDS, SHAPES

FOREGROUND_DISTANCE = 70.0
"""RGB distance from the background above which a pixel belongs to a shape."""
MIN_AREA = 12
"""Connected pixels fewer than this are specks, not shapes."""

_NAMES = list(BACKGROUNDS)
_PALETTE = np.array([BACKGROUNDS[n] for n in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Verdict:
    """What an image shows, as far as the measures can tell."""

    background: str
    color: str | None
    shape: str | None
    count: int
    fill: float  # share of the largest shape's bounding box it covers


def _nearest(rgb: np.ndarray, names: list[str]) -> np.ndarray:
    """Index into ``names`` of the palette color nearest to each row of ``rgb``."""
    palette = np.array([BACKGROUNDS[n] for n in names], dtype=np.float32)
    d = ((rgb[:, None, :] - palette[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of ``mask`` as arrays of (y, x), largest first."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    found = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        found.append(np.array(pixels))
    return sorted(found, key=len, reverse=True)


def _templates(h: int, w: int) -> dict[str, np.ndarray]:
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u = 2 * (u + 0.5) / w - 1  # -1..1 across the box
    v = (v + 0.5) / h  # 0 at the top, 1 at the bottom
    return {
        "circle": u**2 + (2 * v - 1) ** 2 <= 1,
        "square": np.ones((h, w), dtype=bool),
        "triangle": np.abs(u) <= v,
        "diamond": np.abs(u) + np.abs(2 * v - 1) <= 1,
    }


def classify_shape(pixels: np.ndarray) -> tuple[str, float]:
    """The template with the best intersection-over-union, and the box fill ratio."""
    y0, x0 = pixels.min(0)
    y1, x1 = pixels.max(0) + 1
    box = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    box[pixels[:, 0] - y0, pixels[:, 1] - x0] = True
    scores = {}
    for name, template in _templates(*box.shape).items():
        scores[name] = (box & template).sum() / max(1, (box | template).sum())
    best = max(SHAPES, key=lambda s: scores[s])
    return best, float(box.mean())


def judge(image: Image.Image | np.ndarray) -> Verdict:
    """Measure one RGB image."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    rgb = rgb.astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = _NAMES[int(_nearest(bg_rgb[None], _NAMES)[0])]
    mask = np.sqrt(((rgb - bg_rgb) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    shapes = [c for c in _components(mask) if len(c) >= MIN_AREA]
    if not shapes:
        return Verdict(background, None, None, 0, 0.0)
    others = [n for n in _NAMES if n != background]
    pixels = np.concatenate(shapes)
    votes = Counter(_nearest(rgb[pixels[:, 0], pixels[:, 1]], others).tolist())
    color = others[votes.most_common(1)[0][0]]
    shape, fill = classify_shape(shapes[0])
    return Verdict(background, color, shape, len(shapes), fill)
