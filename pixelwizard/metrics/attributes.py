"""What a rendered synthetic clip shows, measured from its frames: the object's colour, shape and motion.

Simple image analysis, no learned weights: pixels far (in RGB) from the prompted background and
its pattern shade are the object; the object's colour is the palette colour most of them are
nearest to; its shape comes from the symmetry of its outline (the strongest of the 3rd, 4th and
5th angular harmonics of its radius, or none for a circle); its motion from the path of its
centroid, its area and its turning. Geometry thresholds are in pixels of the 448-wide reference
canvas and scale with the frame width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixelwizard.training.scenes import COLOURS, REFERENCE_SIZE, shade

BACKGROUND_DISTANCE = 60.0  # RGB distance beyond which a pixel is not background
ANGLE_BINS = 64
CIRCLE_HARMONIC = 0.03  # below this relative harmonic strength the outline counts as a circle
MIN_AREA = 100.0  # reference pixels; a smaller foreground means "no object"
MOVE = 50.0  # reference pixels of net travel that count as moving
BOUNCE = 40.0  # reference pixels of back-and-forth range that count as bouncing
ORBIT = 40.0  # reference pixels of range on both axes, with a half turn swept, count as orbiting
STILL = 25.0  # reference pixels of range under which an object counts as staying in place
GROWTH = 1.8  # area ratio (end / start) that counts as growing (or its inverse as shrinking)
SPIN_DEGREES = 30.0


@dataclass(frozen=True)
class Attributes:
    """Measured attributes; None where nothing object-like was found."""

    colour: str | None
    shape: str | None
    motion: str | None


def _segment_distance(pixels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RGB distance of each pixel to the segment from colour a to colour b (covers blends of the two)."""
    ab = b - a
    t = ((pixels - a) @ ab / (ab @ ab).clamp_min(1e-9)).clamp(0, 1)
    return (pixels - a - t.unsqueeze(-1) * ab).norm(dim=-1)


def foreground_masks(frames: torch.Tensor, background: str) -> torch.Tensor:
    """(T, H, W) bool: pixels that are neither the background colour, its shade, nor a blend of them."""
    bg = torch.tensor(COLOURS[background], dtype=torch.float32)
    dark = torch.tensor(shade(COLOURS[background]), dtype=torch.float32)
    far = _segment_distance(frames.float(), bg, dark) > BACKGROUND_DISTANCE
    # 3x3 majority filter: drops isolated pixels and one-pixel lines (pattern edges).
    smooth = F.avg_pool2d(far.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    return smooth > 0.5


def dominant_colour(frames: torch.Tensor, masks: torch.Tensor) -> str | None:
    """The palette colour most foreground pixels are nearest to."""
    pixels = frames[masks].float()
    if len(pixels) == 0:
        return None
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32)
    nearest = torch.cdist(pixels, palette).argmin(dim=1)
    return names[int(torch.bincount(nearest, minlength=len(names)).argmax())]


def _radial_profile(mask: torch.Tensor) -> torch.Tensor:
    """Radius of the mask in each of ANGLE_BINS directions from its centroid, from the area per sector."""
    ys, xs = mask.nonzero(as_tuple=True)
    ys, xs = ys.float() - ys.float().mean(), xs.float() - xs.float().mean()
    angle = torch.atan2(xs, -ys)  # 0 = up, growing clockwise (as the renderer)
    index = ((angle + math.pi) / (2 * math.pi) * ANGLE_BINS).long() % ANGLE_BINS
    counts = torch.bincount(index, minlength=ANGLE_BINS).float()
    return torch.sqrt(2 * counts / (2 * math.pi / ANGLE_BINS))  # sector area = r^2 dtheta / 2


def outline_symmetry(mask: torch.Tensor) -> tuple[str, float]:
    """(shape, orientation in radians) of one frame's mask from the harmonics of its radius profile."""
    spectrum = torch.fft.rfft(_radial_profile(mask))
    strength = spectrum.abs() / spectrum[0].abs().clamp_min(1e-9)
    k = max((3, 4, 5), key=lambda n: float(strength[n]))
    if float(strength[k]) < CIRCLE_HARMONIC:
        return "circle", 0.0
    shape = {3: "triangle", 4: "square", 5: "star"}[k]
    return shape, -float(torch.angle(spectrum[k])) / k


def _majority(values: list[str]) -> str | None:
    return max(set(values), key=values.count) if values else None


def classify_motion(masks: torch.Tensor, orientations: list[float], symmetry: int) -> str | None:
    """The motion word (scenes.MOTIONS, or 'still') from centroids, areas and outline turning."""
    scale = masks.shape[-1] / REFERENCE_SIZE[0]
    areas = masks.flatten(1).sum(1).float()
    present = areas >= MIN_AREA * scale * scale
    if int(present.sum()) < max(3, masks.shape[0] // 2):
        return None
    ys, xs = [], []
    for mask in masks[present]:
        y, x = mask.nonzero(as_tuple=True)
        ys.append(float(y.float().mean()))
        xs.append(float(x.float().mean()))
    xs_t, ys_t = torch.tensor(xs) / scale, torch.tensor(ys) / scale
    kept = areas[present]
    growth = float(kept[-3:].median() / kept[:3].median())
    dx, dy = float(xs_t[-1] - xs_t[0]), float(ys_t[-1] - ys_t[0])
    range_x, range_y = float(xs_t.max() - xs_t.min()), float(ys_t.max() - ys_t.min())
    if max(range_x, range_y) < STILL:
        if growth > GROWTH:
            return "grow"
        if growth < 1 / GROWTH:
            return "shrink"
        turned = _total_turn(orientations, symmetry)
        return "spin" if abs(math.degrees(turned)) > SPIN_DEGREES else "still"
    if range_x > ORBIT and range_y > ORBIT:
        swept = _total_turn(torch.atan2(ys_t - ys_t.mean(), xs_t - xs_t.mean()).tolist(), 1)
        if abs(swept) > math.pi:
            return "orbit"
    if abs(dx) > MOVE and abs(dx) > 2 * abs(dy):
        return "right" if dx > 0 else "left"
    if abs(dy) > MOVE and abs(dy) > 2 * abs(dx):
        return "down" if dy > 0 else "up"
    if range_x > BOUNCE and range_x > 1.5 * range_y and abs(dx) < 0.4 * range_x:
        return "bounce_h"
    if range_y > BOUNCE and range_y > 1.5 * range_x and abs(dy) < 0.4 * range_y:
        return "bounce_v"
    return "still"


def _total_turn(angles: list[float], symmetry: int) -> float:
    """Summed change of an angle known modulo 2 pi / symmetry, each step taken the short way round."""
    period = 2 * math.pi / symmetry
    total = 0.0
    for a, b in zip(angles, angles[1:]):
        total += (b - a + period / 2) % period - period / 2
    return total


def analyse(frames: torch.Tensor, background: str) -> Attributes:
    """Colour, shape and motion of the object in (T, H, W, 3) uint8 frames over a known background."""
    masks = foreground_masks(frames, background)
    scale = frames.shape[2] / REFERENCE_SIZE[0]
    present = [m for m in masks if float(m.sum()) >= MIN_AREA * scale * scale]
    if len(present) < max(3, len(masks) // 2):
        return Attributes(colour=None, shape=None, motion=None)
    outlines = [outline_symmetry(m) for m in present]
    shape = _majority([s for s, _ in outlines])
    orientations = [o for s, o in outlines if s == shape]
    symmetry = {"triangle": 3, "square": 4, "star": 5}.get(shape or "", 1)
    return Attributes(
        colour=dominant_colour(frames, masks),
        shape=shape,
        motion=classify_motion(masks, orientations, symmetry),
    )
