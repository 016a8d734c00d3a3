"""Drawing scenes into video tensors with torch, anti-aliased, at any size and on any device.

Shapes are drawn from a radial distance to their outline (exact for the circle, a close
approximation for polygons), so edges get about one pixel of anti-aliasing at every output size.
Textures live in the object's own frame: they move, turn and grow with it.

With a ``cell_seed`` the background's cells are random instead of regular (each check and each
stripe shaded or not by a coin flip, each dot displaced within its cell): fine detail that no
anchor can carry, so the detail stage must generate it rather than infer it (docs/training.md).
A ``grain_seed`` adds grain: small square cells of random brightness over the whole
background, too fine and too faint to be decided before the last of a few sampling steps.
"""

from __future__ import annotations

import math

import torch

from pixelwizard.training.scenes import COLOURS, PATTERNS, REFERENCE_SIZE, Scene, poses, shade

CHECK_CELL = 12.0  # background checks, reference pixels
STRIPE_HALF_PERIOD = 6.0  # background diagonal stripes
BACKGROUND_DOT = (16.0, 3.5)  # period, radius
OBJECT_STRIPE = (14.0, 0.4)  # period, duty
OBJECT_DOT = (14.0, 3.5)  # period, radius
OUTLINE_WIDTH = 5.0
GRAIN = (6.0, 32.0)  # grain cell side (reference pixels), largest brightness offset (8-bit values)
CELL_TABLE = 128  # random values per row/column of cells: more than any pattern has on the reference canvas
STAR_INNER = 0.5  # inner radius of the five-pointed star, as a fraction of the outer one


def _square_wave(v: torch.Tensor, half_period: float, pixel: float) -> torch.Tensor:
    """+-1 alternating every ``half_period`` reference pixels, with a ~2-pixel soft edge."""
    return (torch.sin(math.pi * v / half_period) * (half_period * pixel / math.pi)).clamp(-1, 1)


def _dots(x: torch.Tensor, y: torch.Tensor, period: float, radius: float, pixel: torch.Tensor | float) -> torch.Tensor:
    """Coverage of a grid of dots centred on multiples of ``period``."""
    dx = torch.remainder(x + period / 2, period) - period / 2
    dy = torch.remainder(y + period / 2, period) - period / 2
    return (0.5 - (torch.sqrt(dx * dx + dy * dy) - radius) * pixel).clamp(0, 1)


def _cell_values(seed: int, index_y: torch.Tensor, index_x: torch.Tensor, salt: int) -> torch.Tensor:
    """A uniform [0, 1) value per integer cell (index_y, index_x), fixed by ``seed`` at every size and device."""
    table = torch.rand(CELL_TABLE, CELL_TABLE, generator=torch.Generator().manual_seed(seed * 4 + salt))
    return table.to(index_x.device)[index_y.clamp(0, CELL_TABLE - 1), index_x.clamp(0, CELL_TABLE - 1)]


def _random_pattern(pattern: str, x: torch.Tensor, y: torch.Tensor, pixel: float, seed: int) -> torch.Tensor:
    """The irregular version of a background pattern: coin-flip checks and stripes, jittered dots."""
    if pattern == "checkered":
        cell_y, cell_x = (y / CHECK_CELL).long(), (x / CHECK_CELL).long()
        return (_cell_values(seed, cell_y, cell_x, 0) < 0.5).float()
    if pattern == "striped":  # one coin per diagonal stripe
        stripe = ((x + y) / math.sqrt(2) / STRIPE_HALF_PERIOD).long()
        return (_cell_values(seed, torch.zeros_like(stripe), stripe, 1) < 0.5).float()
    period, radius = BACKGROUND_DOT
    cell_y, cell_x = ((y + period / 2) / period).long(), ((x + period / 2) / period).long()
    reach = period / 2 - radius - 1  # the dot stays inside its cell
    jitter_x = (_cell_values(seed, cell_y, cell_x, 2) * 2 - 1) * reach
    jitter_y = (_cell_values(seed, cell_y, cell_x, 3) * 2 - 1) * reach
    return _dots(x - jitter_x, y - jitter_y, period, radius, pixel)


def grain(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Brightness offset (8-bit values) of the grain cell under each reference coordinate, uniform in +-GRAIN[1]."""
    side, amplitude = GRAIN
    return (_cell_values(seed, (y / side).long(), (x / side).long(), 4) * 2 - 1) * amplitude


def background_pattern(
    pattern: str, x: torch.Tensor, y: torch.Tensor, pixel: float, cell_seed: int | None = None
) -> torch.Tensor:
    """Coverage (0..1) of the shade colour for a background pattern over reference coordinates.

    ``cell_seed`` (not None) makes the pattern's cells random, fixed by that seed.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown background pattern {pattern!r}")
    if pattern == "plain":
        return torch.zeros_like(x)
    if cell_seed is not None:
        return _random_pattern(pattern, x, y, pixel, cell_seed)
    if pattern == "checkered":
        return 0.5 - 0.5 * _square_wave(x, CHECK_CELL, pixel) * _square_wave(y, CHECK_CELL, pixel)
    if pattern == "striped":
        return 0.5 + 0.5 * _square_wave((x + y) / math.sqrt(2), STRIPE_HALF_PERIOD, pixel)
    return _dots(x, y, *BACKGROUND_DOT, pixel)


def outline_radius(shape: str, phi: torch.Tensor) -> torch.Tensor:
    """Distance from the centre to the outline along direction ``phi`` (0 = up), circumradius 1."""
    if shape == "circle":
        return torch.ones_like(phi)
    if shape in ("square", "triangle"):
        n = 4 if shape == "square" else 3
        first_normal = 0.0 if shape == "square" else math.pi / 3  # square: axis-aligned; triangle: apex up
        sector = 2 * math.pi / n
        delta = torch.remainder(phi - first_normal + sector / 2, sector) - sector / 2
        return math.cos(math.pi / n) / torch.cos(delta)
    if shape == "star":
        half = math.pi / 5
        alpha = (torch.remainder(phi + half, 2 * half) - half).abs()  # angle from the nearest point
        # Ray from the centre meets the edge from the point (1, 0) to the inner corner (STAR_INNER, 36 deg).
        dx, dy = STAR_INNER * math.cos(half) - 1, STAR_INNER * math.sin(half)
        return dy / (torch.cos(alpha) * dy - torch.sin(alpha) * dx)
    raise ValueError(f"unknown shape {shape!r}")


def _object_texture(scene: Scene, qx: torch.Tensor, qy: torch.Tensor, edge: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
    """Coverage of the texture colour on the object, from object-frame coordinates."""
    if scene.texture == "solid":
        return torch.zeros_like(qx)
    if scene.texture == "stripes":
        period, duty = OBJECT_STRIPE
        offset = (torch.remainder(qx + period / 2, period) - period / 2).abs()
        return (0.5 + (period * duty / 2 - offset) * pixel).clamp(0, 1)
    if scene.texture == "dots":
        return _dots(qx, qy, *OBJECT_DOT, pixel)
    if scene.texture == "outline":
        return (0.5 + (edge + OUTLINE_WIDTH) * pixel).clamp(0, 1)
    raise ValueError(f"unknown texture {scene.texture!r}")


def _rgb(name: str | tuple[int, int, int], device: torch.device) -> torch.Tensor:
    values = COLOURS[name] if isinstance(name, str) else name
    return torch.tensor(values, dtype=torch.float32, device=device).view(3, 1, 1, 1)


def _canvas_coordinates(width: int, height: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Pixel-centre coordinates in reference pixels, (1, H, 1) and (1, 1, W), and output pixels per reference pixel."""
    sx, sy = width / REFERENCE_SIZE[0], height / REFERENCE_SIZE[1]
    y = ((torch.arange(height, device=device) + 0.5) / sy).view(1, height, 1)
    x = ((torch.arange(width, device=device) + 0.5) / sx).view(1, 1, width)
    return x, y, min(sx, sy)


def _object_frame(scene: Scene, frames: int, x: torch.Tensor, y: torch.Tensor, pixel: float):
    """Per frame: object-frame coordinates qx, qy, signed distance to the outline (< 0 inside), local pixel size."""
    pose = torch.tensor(poses(scene, frames), dtype=torch.float32, device=x.device)
    cx, cy, scale, rotation = (pose[:, i].view(frames, 1, 1) for i in range(4))
    dx, dy = x - cx, y - cy
    cos, sin = torch.cos(rotation), torch.sin(rotation)
    qx = (cos * dx + sin * dy) / scale  # object frame, reference pixels at scale 1, y down
    qy = (-sin * dx + cos * dy) / scale
    phi = torch.atan2(qx, -qy)  # 0 = up, growing clockwise
    edge = torch.sqrt(qx * qx + qy * qy) - scene.radius * outline_radius(scene.shape, phi)
    return qx, qy, edge, pixel * scale


def render_scene(
    scene: Scene, frames: int, width: int, height: int, device: torch.device | str = "cpu",
    cell_seed: int | None = None, grain_seed: int | None = None,
) -> torch.Tensor:
    """The clip of one scene, (3, frames, height, width) in [-1, 1]; ``cell_seed``: random background cells,
    ``grain_seed``: background grain."""
    device = torch.device(device)
    x, y, pixel = _canvas_coordinates(width, height, device)
    background = _rgb(scene.background, device)
    pattern = background_pattern(scene.pattern, x, y, pixel, cell_seed)
    canvas = background + (_rgb(shade(COLOURS[scene.background]), device) - background) * pattern
    if grain_seed is not None:
        canvas = (canvas + grain(x, y, grain_seed)).clamp(0, 255)

    qx, qy, edge, local_pixel = _object_frame(scene, frames, x, y, pixel)
    cover = (0.5 - edge * local_pixel).clamp(0, 1)
    colour = _rgb(scene.colour, device)
    texture = _object_texture(scene, qx, qy, edge, local_pixel)
    if scene.texture_colour is not None:
        colour = colour + (_rgb(scene.texture_colour, device) - colour) * texture
    video = canvas + (colour - canvas) * cover
    return video / 127.5 - 1


def object_mask(scene: Scene, frames: int, width: int, height: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """How much of each pixel the object covers, (frames, height, width) in [0, 1] (same edges as render_scene)."""
    x, y, pixel = _canvas_coordinates(width, height, torch.device(device))
    _, _, edge, local_pixel = _object_frame(scene, frames, x, y, pixel)
    return (0.5 - edge * local_pixel).clamp(0, 1)


def render_scenes(
    scenes: list[Scene], frames: int, width: int, height: int, device: torch.device | str = "cpu",
    cell_seeds: list[int] | None = None, grain_seeds: list[int] | None = None,
) -> torch.Tensor:
    """A batch of clips, (B, 3, frames, height, width) in [-1, 1]; ``cell_seeds`` and ``grain_seeds``: one per
    scene, or None."""
    cells = cell_seeds if cell_seeds is not None else [None] * len(scenes)
    grains = grain_seeds if grain_seeds is not None else [None] * len(scenes)
    return torch.stack([render_scene(s, frames, width, height, device, c, g)
                        for s, c, g in zip(scenes, cells, grains, strict=True)])

