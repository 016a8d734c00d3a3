"""The synthetic world: scene attributes, their captions, their motion paths, and held-out combinations.

A scene is one textured object moving in a described way over a textured background. Every
attribute is stated in the caption; an absent size word means medium, an absent texture phrase
means a solid colour. Scenes are drawn from a
``random.Random`` seeded by (dataset seed, clip index), so a clip is the same on every machine.
Geometry is in pixels of a 448x256 reference canvas (the tiny preset's detail size); the
renderer scales it to any output size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass
from typing import Literal

REFERENCE_SIZE = (448, 256)  # (width, height) that scene geometry is expressed in

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (50, 165, 70),
    "blue": (45, 85, 215),
    "yellow": (235, 220, 45),
    "orange": (245, 130, 20),
    "purple": (135, 60, 175),
    "pink": (240, 140, 195),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
    "cyan": (50, 195, 215),
    "brown": (125, 80, 45),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 28.0, "medium": 40.0, "large": 52.0}  # circumradius in reference pixels
TEXTURES = ("solid", "stripes", "dots", "outline")
PATTERNS = ("plain", "checkered", "striped", "dotted")
MOTIONS = ("right", "left", "up", "down", "bounce_h", "bounce_v", "orbit", "grow", "shrink", "spin")

# Caption phrases per motion; one is picked per clip so the model learns synonyms.
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "right": ("moves right", "slides right", "drifts right", "travels to the right"),
    "left": ("moves left", "slides left", "drifts left", "travels to the left"),
    "up": ("moves up", "slides up", "drifts up", "rises"),
    "down": ("moves down", "slides down", "drifts down", "falls"),
    "bounce_h": ("bounces left and right", "bounces from side to side"),
    "bounce_v": ("bounces up and down",),
    "orbit": ("orbits the center", "circles around the center", "moves in a circle"),
    "grow": ("grows", "grows larger", "expands"),
    "shrink": ("shrinks", "gets smaller"),
    "spin": ("spins in place", "rotates in place"),
}
PREPOSITIONS = ("over", "across", "on")

# Least RGB distance between colours that must stay apart (object, its texture, the background).
MIN_COLOUR_DISTANCE = 90.0
# Held-out share: a (colour, shape, motion) triple whose hash falls in 1 of this many buckets.
HELD_OUT_BUCKETS = 8
SPIN_DEGREES = 80.0  # total rotation of a spinning object over a clip
ORBIT_SWEEP = 1.5 * math.pi  # 270 degrees: a circle's worth without ending where it began
GROW_RANGE = (0.6, 1.4)  # scale at the start and end of "grow" ("shrink" reverses it)

Split = Literal["train", "heldout", "any"]


@dataclass(frozen=True)
class Scene:
    """Everything that fixes one clip: attributes, caption wording and motion geometry."""

    colour: str
    shape: str
    size: str
    texture: str
    texture_colour: str | None
    motion: str
    background: str
    pattern: str
    motion_phrase: str
    preposition: str
    x: float  # start (or fixed) centre, reference pixels
    y: float
    travel: float  # path length (linear), amplitude (bounce) or radius (orbit), reference pixels
    angle: float  # orbit start angle, radians
    direction: int  # +1 or -1: orbit / spin sense, bounce starting direction

    @property
    def caption(self) -> str:
        """The caption, stating every attribute."""
        words = ["a"]
        if self.size != "medium":
            words.append(self.size)
        words += [self.colour, self.shape]
        if self.texture == "stripes":
            words += ["with", self.texture_colour, "stripes"]
        elif self.texture == "dots":
            words += ["with", self.texture_colour, "dots"]
        elif self.texture == "outline":
            words += ["with", "a", self.texture_colour, "outline"]
        words += self.motion_phrase.split() + [self.preposition, "a", self.pattern, self.background, "background"]
        return " ".join(_articles(words))

    @property
    def radius(self) -> float:
        return SIZES[self.size]


def _articles(words: list[str]) -> list[str]:
    """'a' before a vowel becomes 'an'."""
    return ["an" if w == "a" and i + 1 < len(words) and words[i + 1][0] in "aeiou" else w for i, w in enumerate(words)]


def shade(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The second colour of a background pattern: darker for light colours, lighter for dark ones."""
    r, g, b = colour
    if 0.299 * r + 0.587 * g + 0.114 * b > 100:
        return (round(r * 0.6), round(g * 0.6), round(b * 0.6))
    return tuple(round(c + (255 - c) * 0.35) for c in colour)  # type: ignore[return-value]


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(a, b)


def is_held_out(colour: str, shape: str, motion: str) -> bool:
    """Whether a (colour, shape, motion) combination is kept out of training, for evaluation."""
    digest = hashlib.sha256(f"{colour}|{shape}|{motion}".encode()).digest()
    return digest[0] % HELD_OUT_BUCKETS == 0


def caption_words() -> set[str]:
    """Every word a caption can contain (the tokenizer's vocabulary must hold them all)."""
    words = {"a", "an", "with", "background", "stripes", "dots", "outline"}
    words |= set(COLOURS) | set(SHAPES) | (set(SIZES) - {"medium"}) | set(PATTERNS) | set(PREPOSITIONS)
    for phrases in MOTION_PHRASES.values():
        for phrase in phrases:
            words |= set(phrase.split())
    return words


def _far_apart(*colours: str) -> bool:
    """Whether the given colour names are pairwise at least MIN_COLOUR_DISTANCE apart."""
    rgb = [COLOURS[c] for c in colours]
    return all(colour_distance(a, b) >= MIN_COLOUR_DISTANCE for i, a in enumerate(rgb) for b in rgb[i + 1 :])


def _fits_background(colour: str, background: str) -> bool:
    bg = COLOURS[background]
    return min(colour_distance(COLOURS[colour], bg), colour_distance(COLOURS[colour], shade(bg))) >= MIN_COLOUR_DISTANCE


def _geometry(rng: random.Random, motion: str, radius: float) -> tuple[float, float, float, float, int]:
    """(x, y, travel, angle, direction) for a motion, keeping the object inside the canvas."""
    width, height = REFERENCE_SIZE
    grow = GROW_RANGE[1] if motion in ("grow", "shrink") else 1.0
    margin = radius * grow * 1.05 + 4
    direction = rng.choice((1, -1))
    x, y = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
    travel, angle = 0.0, 0.0
    if motion in ("right", "left"):
        travel = rng.uniform(120, 200)
        x = rng.uniform(margin, width - margin - travel) + (travel if motion == "left" else 0)
    elif motion in ("up", "down"):
        travel = rng.uniform(70, min(110, height - 2 * margin))
        y = rng.uniform(margin, height - margin - travel) + (travel if motion == "up" else 0)
    elif motion == "bounce_h":
        travel = rng.uniform(60, 90)
        x = rng.uniform(margin + travel, width - margin - travel)
    elif motion == "bounce_v":
        travel = rng.uniform(30, min(50, height / 2 - margin))
        y = rng.uniform(margin + travel, height - margin - travel)
    elif motion == "orbit":
        travel = rng.uniform(45, height / 2 - margin)
        x, y = width / 2 + rng.uniform(-60, 60), height / 2
        angle = rng.uniform(0, 2 * math.pi)
    return x, y, travel, angle, direction


def sample_scene(rng: random.Random, split: Split = "train") -> Scene:
    """A random valid scene; ``split`` keeps held-out (colour, shape, motion) triples in or out."""
    while True:
        colour, shape, motion = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(MOTIONS)
        if shape == "circle" and motion == "spin":
            continue  # a spinning circle looks still: nothing to learn or to measure
        if split != "any" and is_held_out(colour, shape, motion) != (split == "heldout"):
            continue
        background, pattern = rng.choice(list(COLOURS)), rng.choice(PATTERNS)
        texture = rng.choice(TEXTURES)
        texture_colour = None if texture == "solid" else rng.choice(list(COLOURS))
        if not _fits_background(colour, background):
            continue
        if texture_colour is not None and not (
            _far_apart(colour, texture_colour) and _fits_background(texture_colour, background)
        ):
            continue
        size = rng.choice(list(SIZES))
        x, y, travel, angle, direction = _geometry(rng, motion, SIZES[size])
        return Scene(
            colour=colour, shape=shape, size=size, texture=texture, texture_colour=texture_colour, motion=motion,
            background=background, pattern=pattern, motion_phrase=rng.choice(MOTION_PHRASES[motion]),
            preposition=rng.choice(PREPOSITIONS), x=x, y=y, travel=travel, angle=angle, direction=direction,
        )


def counterfactual(scene: Scene, rng: random.Random) -> Scene:
    """The same clip with the object in another shape and, half the time, another colour that still fits.

    Place, size, motion, texture and background stay: rendered as a detail model's anchor beside the
    unchanged caption, it is an anchor whose object the caption contradicts, as the tiny anchor
    model's often is (docs/training.md, run 28).
    """
    shape = rng.choice([s for s in SHAPES if s != scene.shape])
    colour = scene.colour
    if rng.random() < 0.5:
        fitting = [c for c in COLOURS if c != scene.colour and _fits_background(c, scene.background)
                   and (scene.texture_colour is None or _far_apart(c, scene.texture_colour))]
        colour = rng.choice(fitting) if fitting else colour
    return dataclasses.replace(scene, shape=shape, colour=colour)


def scene_for(seed: int, index: int, split: Split = "train") -> Scene:
    """Clip ``index`` of the dataset with ``seed``: the same scene on every machine."""
    return sample_scene(random.Random(f"pixelwizard-scenes:{seed}:{index}"), split)


def _triangle_wave(u: float) -> float:
    """Period 1, range [-1, 1], 0 at u = 0 and rising: a back-and-forth bounce."""
    return 1 - 4 * abs((u + 0.25) % 1.0 - 0.5)


def pose(scene: Scene, t: float) -> tuple[float, float, float, float]:
    """(centre x, centre y, scale, rotation in radians) at clip time t in [0, 1]."""
    x, y, scale, rotation = scene.x, scene.y, 1.0, 0.0
    m = scene.motion
    if m == "right":
        x += scene.travel * t
    elif m == "left":
        x -= scene.travel * t
    elif m == "down":
        y += scene.travel * t
    elif m == "up":
        y -= scene.travel * t
    elif m == "bounce_h":
        x += scene.direction * scene.travel * _triangle_wave(t)
    elif m == "bounce_v":
        y += scene.direction * scene.travel * _triangle_wave(t)
    elif m == "orbit":
        theta = scene.angle + scene.direction * ORBIT_SWEEP * t
        x, y = x + scene.travel * math.cos(theta), y + scene.travel * math.sin(theta)
    elif m in ("grow", "shrink"):
        lo, hi = GROW_RANGE if m == "grow" else GROW_RANGE[::-1]
        scale = lo + (hi - lo) * t
    elif m == "spin":
        rotation = scene.direction * math.radians(SPIN_DEGREES) * t
    return x, y, scale, rotation


def poses(scene: Scene, frames: int) -> list[tuple[float, float, float, float]]:
    """The pose at each of ``frames`` evenly spaced times from 0 to 1."""
    return [pose(scene, f / max(frames - 1, 1)) for f in range(frames)]
