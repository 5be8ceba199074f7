"""A pinhole camera over a flat street and a canvas that rasterises primitives into an object-id map.

Every primitive (polygon, ellipse, ring) gets its own object id; the canvas records the id's
labelId, colour and texture amplitudes. The label map and the image are both looked up from the
same id map afterwards, so they agree pixel for pixel by construction (no anti-aliasing anywhere).
Later primitives overwrite earlier ones: callers draw far to near (painter's algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .style import DomainStyle

Point = tuple[float, float]


@dataclass(frozen=True)
class Camera:
    """World: X right, Y up, Z forward (metres), camera at (0, height, 0) looking along +Z.

    ``cx``/``cy`` are the vanishing point in pixels (``cy`` is the horizon row), ``f`` the focal
    length in pixels.
    """

    f: float
    cx: float
    cy: float
    height: float

    def project(self, x: float, y: float, z: float) -> Point:
        return (self.cx + self.f * x / z, self.cy + self.f * (self.height - y) / z)

    def scale(self, z: float) -> float:
        """Pixels per metre on the plane at depth ``z``."""
        return self.f / z

    def ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> list[Point]:
        """The road-plane rectangle x0..x1 by z0..z1."""
        p = self.project
        return [p(x0, 0, z0), p(x1, 0, z0), p(x1, 0, z1), p(x0, 0, z1)]

    def side_quad(self, x: float, y0: float, y1: float, z0: float, z1: float) -> list[Point]:
        """A rectangle in the plane X = x (a facade along the street)."""
        p = self.project
        return [p(x, y0, z0), p(x, y1, z0), p(x, y1, z1), p(x, y0, z1)]

    def front_quad(self, x0: float, x1: float, y0: float, y1: float, z: float) -> list[Point]:
        """A rectangle in the plane Z = z (facing the camera)."""
        p = self.project
        return [p(x0, y0, z), p(x1, y0, z), p(x1, y1, z), p(x0, y1, z)]

    def top_quad(self, x0: float, x1: float, y: float, z0: float, z1: float) -> list[Point]:
        """A horizontal rectangle at height y (a roof)."""
        p = self.project
        return [p(x0, y, z0), p(x1, y, z0), p(x1, y, z1), p(x0, y, z1)]


@dataclass(frozen=True)
class Paint:
    """A colour chosen for one object (shared by its parts) and the material it came from."""

    rgb: tuple[float, float, float]
    material: str


class Canvas:
    """Rasterises primitives into an int32 object-id map and records a table per id."""

    def __init__(self, width: int, height: int, style: DomainStyle, rng: np.random.Generator) -> None:
        self.width, self.height = width, height
        self.style, self.rng = style, rng
        self._ids = Image.new("I", (width, height), 0)
        self._draw = ImageDraw.Draw(self._ids)
        self.labels: list[int] = []
        self.colors: list[tuple[float, float, float]] = []
        self.textures: list[tuple[float, float]] = []
        self.depths: list[float] = []
        self.shades: list[float] = []
        self._texture = {m: tuple(map(float, a)) for m, a in style.texture.items()}

    def paint(self, material: str) -> Paint:
        """Draw one palette colour of ``material`` plus the style's per-object jitter: a common
        brightness offset (``color_jitter``) and a small independent one per channel (``chroma_jitter``)."""
        style, rng = self.style, self.rng
        choices = style.palette[material]
        r, g, b = choices[int(rng.random() * len(choices))] if len(choices) > 1 else choices[0]
        if style.color_jitter > 0 or style.chroma_jitter > 0:
            n = rng.standard_normal(4).tolist()
            common = n[0] * style.color_jitter
            cj = style.chroma_jitter
            return Paint((r + common + cj * n[1], g + common + cj * n[2], b + common + cj * n[3]), material)
        return Paint((float(r), float(g), float(b)), material)

    def _register(self, label: int, paint: Paint, depth: float, shade: float) -> int:
        self.labels.append(label)
        self.colors.append(paint.rgb)
        self.textures.append(self._texture.get(paint.material, (0.0, 0.0)))
        self.depths.append(depth)
        self.shades.append(shade)
        return len(self.labels) - 1

    def polygon(self, points: list[Point], label: int, paint: Paint, depth: float = 0.0,
                shade: float = 0.0) -> None:
        """Fill a polygon. ``shade`` -1 darkens (side faces), +1 lightens (tops) by face_shading."""
        self._draw.polygon(points, fill=self._register(label, paint, depth, shade))

    def rect(self, x0: float, y0: float, x1: float, y1: float, label: int, paint: Paint,
             depth: float = 0.0, shade: float = 0.0) -> None:
        """An axis-aligned pixel rectangle at least one pixel wide and tall (thin poles stay visible)."""
        xa, xb = sorted((x0, x1))
        ya, yb = sorted((y0, y1))
        xa, xb = _clip(xa), _clip(max(xb - 1.0, xa))
        ya, yb = _clip(ya), _clip(max(yb - 1.0, ya))
        self._draw.rectangle([int(round(xa)), int(round(ya)), int(round(xb)), int(round(yb))],
                             fill=self._register(label, paint, depth, shade))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, label: int, paint: Paint,
                depth: float = 0.0, ring: float = 0.0) -> None:
        """A filled ellipse, or with ``ring`` > 0 only an outline that many pixels wide."""
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        box = [_clip(cx - rx), _clip(cy - ry), _clip(cx + rx), _clip(cy + ry)]
        oid = self._register(label, paint, depth, 0.0)
        if ring > 0:
            self._draw.ellipse(box, outline=oid, width=max(1, int(round(ring))))
        else:
            self._draw.ellipse(box, fill=oid)

    def line(self, points: list[Point], width: float, label: int, paint: Paint, depth: float = 0.0) -> None:
        """A polyline at least one pixel wide (bicycle frames, fence rails)."""
        self._draw.line(points, fill=self._register(label, paint, depth, 0.0),
                        width=max(1, int(round(width))))

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids (H, W) int32, labels (N,) uint8, colours (N, 3) float32, textures (N, 2) float32).

        Colours include face shading and haze (aerial perspective: blend towards the mean sky
        colour with depth), applied here for all objects at once.
        """
        style = self.style
        ids = np.asarray(self._ids, dtype=np.int32)
        rgb = np.asarray(self.colors, dtype=np.float64).reshape(-1, 3)
        if style.face_shading:
            rgb = rgb * (1.0 + style.face_shading * np.asarray(self.shades))[:, None]
        if style.haze > 0:
            haze_rgb = np.mean(np.asarray(style.palette["sky"], dtype=np.float64), axis=0)
            keep = np.exp(-style.haze * np.minimum(np.asarray(self.depths), 1e4))[:, None]
            rgb = keep * rgb + (1.0 - keep) * haze_rgb
        return (ids, np.asarray(self.labels, dtype=np.uint8), rgb.astype(np.float32),
                np.asarray(self.textures, dtype=np.float32).reshape(-1, 2))


_LIMIT = 1e5  # PIL rasterises in int; keep projected points of near-camera geometry bounded


def _clip(v: float) -> float:
    return float(min(max(v, -_LIMIT), _LIMIT))
