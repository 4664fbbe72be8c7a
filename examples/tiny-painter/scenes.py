"""The tiny painter's world: a vocabulary, a palette, and scenes drawn with Pillow.

A scene is one or two shapes of one color on a plain background, described by a short
English prompt ("a red circle", "two blue squares on a yellow background"). Everything is
drawn from a ``random.Random``, so a seed always gives the same scenes and prompts.
Shapes are drawn at four times the size and scaled down, so their edges are antialiased.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
"""Images are SIZE x SIZE pixels."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (250, 140, 20),
    "yellow": (245, 215, 30),
    "green": (40, 165, 60),
    "blue": (35, 85, 225),
    "purple": (140, 45, 185),
}
"""Colors a shape can have (and a background too)."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    **COLORS,
}
"""Background colors; a prompt that names none gets white."""

SHAPES = ("circle", "square", "triangle", "diamond")
"""Shapes, each drawn upright: the triangle points up, the diamond is a square on its tip."""

COUNTS = {1: "a", 2: "two"}

WORDS = (
    *COLORS,
    "white",
    "black",
    "gray",
    *SHAPES,
    *(s + "s" for s in SHAPES),
    "a",
    "an",
    "one",
    "two",
    "on",
    "background",
)
"""Every word the painter knows; the tokenizer gives each one a token of its own."""


@dataclass(frozen=True)
class Scene:
    """What one image shows."""

    color: str
    shape: str
    background: str = "white"
    count: int = 1
    background_named: bool = False

    @property
    def prompt(self) -> str:
        """The English description the painter learns to draw."""
        if self.count == 1:
            text = f"{_article(self.color)} {self.color} {self.shape}"
        else:
            text = f"{COUNTS[self.count]} {self.color} {self.shape}s"
        if self.background_named:
            text += f" on {_article(self.background)} {self.background} background"
        return text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def random_scene(rng: random.Random) -> Scene:
    """A scene drawn from the training distribution.

    Half the scenes leave the background unnamed (it is then white), so a bare prompt such
    as "a red circle" means a red circle on white.
    """
    color = rng.choice(list(COLORS))
    shape = rng.choice(SHAPES)
    count = 2 if rng.random() < 0.3 else 1
    if rng.random() < 0.5:
        return Scene(color, shape, "white", count, background_named=False)
    background = rng.choice([b for b in BACKGROUNDS if b != color])
    return Scene(color, shape, background, count, background_named=True)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":  # fills half of its 2r x 2r bounding box
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"unknown shape {shape!r}")


def layout(count: int, rng: random.Random) -> list[tuple[float, float, float]]:
    """Where the shapes go: one shape near the middle, two side by side, each with a little
    random jitter in place and size. A fixed composition is what lets a 2 M-parameter model
    learn crisp shapes in minutes: it has to learn what to draw, hardly where."""
    mid = SIZE / 2
    if count == 1:
        r = rng.uniform(15.0, 21.0)
        return [(mid + rng.uniform(-3, 3), mid + rng.uniform(-3, 3), r)]
    r = rng.uniform(8.0, 11.0)
    y = mid + rng.uniform(-3, 3)
    return [(SIZE * 0.28 + rng.uniform(-2, 2), y, r), (SIZE * 0.72 + rng.uniform(-2, 2), y, r)]


def draw(scene: Scene, rng: random.Random, scale: int = 4) -> Image.Image:
    """Draw ``scene`` in its ``layout`` (shapes never touch the edge or each other)."""
    big = SIZE * scale
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    pen = ImageDraw.Draw(image)
    fill = COLORS[scene.color]
    for cx, cy, r in layout(scene.count, rng):
        x, y, s = cx * scale, cy * scale, r * scale
        if scene.shape == "circle":
            pen.ellipse((x - s, y - s, x + s, y + s), fill=fill)
        else:
            pen.polygon(_polygon(scene.shape, x, y, s), fill=fill)
    return image.resize((SIZE, SIZE), Image.Resampling.BOX)
