"""Drawing of the things in a street: vehicles, people, riders, street furniture, vegetation.

Each function draws one object standing on the road plane at lateral position ``x`` and depth ``z``
(metres, see ``Camera``), from its far parts to its near parts, with the Cityscapes labelId of each
part. Sizes are real-world metres times ``k`` (the per-image object scale).
"""

from __future__ import annotations

import math

import numpy as np

from .canvas import Camera, Canvas, Point

# Cityscapes labelIds (GTA5 uses the same scheme); data/labels.py maps them to train ids.
EGO_VEHICLE, ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 1, 7, 8, 11, 12, 13, 17
TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, SKY = 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 31, 32, 33


def _front(cam: Camera, x: float, z: float, pts: list[tuple[float, float]]) -> list[Point]:
    """Local (dx, y) metres on the plane Z = z, centred on x -> pixels."""
    return [cam.project(x + dx, y, z) for dx, y in pts]


def _box(x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _disc(cv: Canvas, cam: Camera, x: float, y: float, z: float, r: float, label: int, paint,
          ring: float = 0.0) -> None:
    """A circle of radius r metres in the plane Z = z (ring: outline width in metres)."""
    u, v = cam.project(x, y, z)
    s = cam.scale(z)
    cv.ellipse(u, v, r * s, r * s, label, paint, depth=z, ring=ring * s if ring else 0.0)


# ---------------------------------------------------------------- vehicles
VEHICLE_SIZE = {"car": (1.8, 4.4, 1.45), "truck": (2.4, 7.5, 3.3), "bus": (2.55, 12.0, 3.1),
                "train": (2.6, 24.0, 3.4)}  # width, length, height (metres)
_CIRCLE = [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 12, endpoint=False).tolist()]
VEHICLE_LABEL = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}


def vehicle(cv: Canvas, cam: Camera, kind: str, x: float, z: float, k: float, facing_away: bool) -> None:
    """A box-shaped vehicle whose near face is at depth z, centred on x, driving along the street.

    The visible side face and roof are drawn first, then the near face (rear or front) with its
    windows, lights, plate and tyres. All parts carry the vehicle's labelId.
    """
    if kind == "truck":
        truck(cv, cam, x, z, k, facing_away)
        return
    w, length, h = (d * k for d in VEHICLE_SIZE[kind])
    label = VEHICLE_LABEL[kind]
    body, glass, tire = cv.paint(kind), cv.paint("glass"), cv.paint("tire")
    x0, x1, zb = x - w / 2, x + w / 2, z + length
    wheel_r = (0.33 if kind == "car" else 0.5) * k
    clear = 0.28 * k if kind == "car" else 0.45 * k  # body starts above the road; tyres show below
    xs = x0 if x0 > 0 else (x1 if x1 < 0 else None)  # the side face the camera sees, if any
    if xs is not None:
        cv.polygon(cam.side_quad(xs, clear, h if kind != "car" else 0.95 * k, z, zb), label, body,
                   depth=z, shade=-1)
        if kind == "car":
            cv.polygon(cam.side_quad(xs, 0.95 * k, h, z + 1.0 * k, zb - 1.1 * k), label, body, depth=z, shade=-1)
            cv.polygon(cam.side_quad(xs, 1.0 * k, h - 0.08 * k, z + 1.2 * k, zb - 1.3 * k), label, glass, depth=z)
        else:
            top = h - 0.35 * k
            cv.polygon(cam.side_quad(xs, top - 0.9 * k, top, z + 0.6 * k, zb - 0.6 * k), label, glass, depth=z)
        for zc in ([z + 0.9 * k, zb - 0.9 * k] if kind != "train" else []):
            pts = [cam.project(xs, wheel_r * (1 + sn), zc + wheel_r * cs) for cs, sn in _CIRCLE]
            cv.polygon(pts, label, tire, depth=zc)
    if h < cam.height:  # the roof is visible from a camera higher than the vehicle
        cv.polygon(cam.top_quad(x0 + 0.1 * w, x1 - 0.1 * w, h, z + 1.0 * k, zb - 1.1 * k), label, body,
                   depth=z, shade=1)
    lx, hx = -w / 2, w / 2
    if kind == "car":
        for tx in (lx + 0.08 * w, hx - 0.22 * w):
            cv.polygon(_front(cam, x, z, _box(tx, tx + 0.14 * w, 0.0, clear + 0.05)), label, tire, depth=z)
        cv.polygon(_front(cam, x, z, _box(lx, hx, clear, 0.95 * k)), label, body, depth=z)
        cab = [(lx + 0.1 * w, 0.95 * k), (hx - 0.1 * w, 0.95 * k), (hx - 0.2 * w, h), (lx + 0.2 * w, h)]
        cv.polygon(_front(cam, x, z, cab), label, body, depth=z)
        win = [(lx + 0.17 * w, 1.0 * k), (hx - 0.17 * w, 1.0 * k), (hx - 0.24 * w, h - 0.07 * k),
               (lx + 0.24 * w, h - 0.07 * k)]
        cv.polygon(_front(cam, x, z, win), label, glass, depth=z)
    else:
        cv.polygon(_front(cam, x, z, _box(lx, hx, clear, h)), label, body, depth=z)
        for tx in (lx + 0.05 * w, hx - 0.2 * w):
            cv.polygon(_front(cam, x, z, _box(tx, tx + 0.15 * w, 0.0, clear + 0.05)), label, tire, depth=z)
        top = h - 0.35 * k
        cv.polygon(_front(cam, x, z, _box(lx + 0.1 * w, hx - 0.1 * w, top - 0.9 * k, top)), label, glass, depth=z)
    lamp = cv.paint("tail_light" if facing_away else "head_light")
    ly = 0.7 * k if kind == "car" else 0.8 * k
    for tx in (lx + 0.04 * w, hx - 0.2 * w):
        cv.polygon(_front(cam, x, z, _box(tx, tx + 0.16 * w, ly, ly + 0.15 * k)), label, lamp, depth=z)
    cv.polygon(_front(cam, x, z, _box(-0.13 * w, 0.13 * w, 0.35 * k, 0.5 * k)), label, cv.paint("plate"), depth=z)


def truck(cv: Canvas, cam: Camera, x: float, z: float, k: float, facing_away: bool) -> None:
    """A lorry: a tall cargo box and a lower cab with a windscreen; from behind only the box
    (with a door seam) shows its near face, from the front the cab does."""
    w, length, h = (d * k for d in VEHICLE_SIZE["truck"])
    body, cargo, glass, tire = cv.paint("truck"), cv.paint("truck"), cv.paint("glass"), cv.paint("tire")
    x0, x1, zb, cab_len, cab_h, clear = x - w / 2, x + w / 2, z + length, 2.2 * k, 0.8 * h, 0.45 * k
    cab = (zb - cab_len, zb) if facing_away else (z, z + cab_len)
    box = (z, zb - cab_len - 0.2 * k) if facing_away else (z + cab_len + 0.2 * k, zb)
    xs = x0 if x0 > 0 else (x1 if x1 < 0 else None)
    if xs is not None:
        cv.polygon(cam.side_quad(xs, clear, h, *box), TRUCK, cargo, depth=z, shade=-1)
        cv.polygon(cam.side_quad(xs, clear, cab_h, *cab), TRUCK, body, depth=z, shade=-1)
        cv.polygon(cam.side_quad(xs, cab_h - 0.9 * k, cab_h - 0.15 * k, cab[0] + 0.3 * k, cab[1] - 0.5 * k),
                   TRUCK, glass, depth=z)
        for zc in (z + 1.0 * k, zb - 1.0 * k):
            pts = [cam.project(xs, 0.5 * k * (1 + sn), zc + 0.5 * k * cs) for cs, sn in _CIRCLE]
            cv.polygon(pts, TRUCK, tire, depth=zc)
    lx, hx = -w / 2, w / 2
    for tx in (lx + 0.05 * w, hx - 0.2 * w):
        cv.polygon(_front(cam, x, z, _box(tx, tx + 0.15 * w, 0.0, clear + 0.05)), TRUCK, tire, depth=z)
    if facing_away:
        cv.polygon(_front(cam, x, z, _box(lx, hx, clear, h)), TRUCK, cargo, depth=z)
        cv.polygon(_front(cam, x, z, _box(-0.02 * w, 0.02 * w, clear + 0.2 * k, h - 0.2 * k)), TRUCK, tire, depth=z)
        lamp = cv.paint("tail_light")
    else:
        cv.polygon(_front(cam, x, box[0], _box(lx, hx, cab_h, h)), TRUCK, cargo, depth=box[0])
        cv.polygon(_front(cam, x, z, _box(lx, hx, clear, cab_h)), TRUCK, body, depth=z)
        cv.polygon(_front(cam, x, z, _box(lx + 0.08 * w, hx - 0.08 * w, cab_h - 0.9 * k, cab_h - 0.15 * k)), TRUCK,
                   glass, depth=z)
        lamp = cv.paint("head_light")
    for tx in (lx + 0.04 * w, hx - 0.2 * w):
        cv.polygon(_front(cam, x, z, _box(tx, tx + 0.16 * w, 0.8 * k, 0.95 * k)), TRUCK, lamp, depth=z)


# ---------------------------------------------------------------- people and riders
def person(cv: Canvas, cam: Camera, x: float, z: float, height: float, label: int = PERSON,
           stride: float = 0.0, base: float = 0.0) -> None:
    """A pedestrian (or, with ``label=RIDER`` and ``base`` > 0, the upper body of a rider)."""
    h = height
    skin, shirt, pants, hair = cv.paint("skin"), cv.paint("shirt"), cv.paint("pants"), cv.paint("hair")
    hip = 0.52 * h
    if base <= 0:  # legs: two quads from the hips to the feet, spread by the walking stride
        for side, sgn in ((-1, 1), (1, -1)):
            top = side * 0.06 * h
            foot = top + sgn * stride * h
            leg = [(top - 0.045 * h, hip), (top + 0.045 * h, hip), (foot + 0.035 * h, 0.0), (foot - 0.04 * h, 0.0)]
            cv.polygon(_front(cam, x, z, leg), label, pants, depth=z)
    else:  # a rider's legs hang from the seat to the pedals
        for side in (-1, 1):
            leg = _box(side * 0.06 * h - 0.04 * h, side * 0.06 * h + 0.04 * h, base - 0.25 * h, base + 0.05 * h)
            cv.polygon(_front(cam, x, z, leg), label, pants, depth=z)
        hip = base + 0.05 * h
    shoulder = hip + 0.32 * h
    torso = [(-0.12 * h, hip), (0.12 * h, hip), (0.14 * h, shoulder), (-0.14 * h, shoulder)]
    for side in (-1, 1):  # arms hang along the torso
        arm = [(side * 0.13 * h, shoulder), (side * 0.18 * h, shoulder - 0.02 * h),
               (side * 0.19 * h, shoulder - 0.3 * h), (side * 0.14 * h, shoulder - 0.3 * h)]
        cv.polygon(_front(cam, x, z, arm), label, shirt, depth=z)
    cv.polygon(_front(cam, x, z, torso), label, shirt, depth=z)
    u, v = cam.project(x, shoulder + 0.08 * h, z)
    s = cam.scale(z)
    cv.ellipse(u, v, 0.055 * h * s, 0.075 * h * s, label, skin, depth=z)
    u, v = cam.project(x, shoulder + 0.12 * h, z)
    cv.ellipse(u, v, 0.058 * h * s, 0.04 * h * s, label, hair, depth=z)


def bicycle_side(cv: Canvas, cam: Camera, x: float, z: float, k: float, direction: int) -> None:
    """A bicycle seen from the side (wheels as rings, frame as lines), pointing along +-X."""
    paint = cv.paint("bicycle")
    r, d = 0.34 * k, direction
    rear, front = (x - 0.52 * k * d, r), (x + 0.52 * k * d, r)
    s = cam.scale(z)
    for cx, cy in (rear, front):
        _disc(cv, cam, cx, cy, z, r, BICYCLE, paint, ring=0.06 * k)
    frame = [rear, (x - 0.15 * k * d, 0.9 * k), (x + 0.38 * k * d, 0.95 * k), front]
    cv.line([cam.project(px, py, z) for px, py in frame], 0.05 * k * s, BICYCLE, paint, depth=z)
    crank = [rear, (x, r), (x - 0.15 * k * d, 0.9 * k)]
    cv.line([cam.project(px, py, z) for px, py in crank], 0.05 * k * s, BICYCLE, paint, depth=z)
    bar = [(x + 0.38 * k * d, 0.95 * k), (x + 0.45 * k * d, 1.08 * k)]
    cv.line([cam.project(px, py, z) for px, py in bar], 0.05 * k * s, BICYCLE, paint, depth=z)


def motorcycle_side(cv: Canvas, cam: Camera, x: float, z: float, k: float, direction: int) -> None:
    """A motorcycle seen from the side: two dark discs and a body polygon."""
    paint, tire = cv.paint("motorcycle"), cv.paint("tire")
    r, d = 0.32 * k, direction
    for cx in (x - 0.7 * k * d, x + 0.7 * k * d):
        _disc(cv, cam, cx, r, z, r, MOTORCYCLE, tire)
        _disc(cv, cam, cx, r, z, 0.45 * r, MOTORCYCLE, paint)
    body = [(-0.85 * d, 0.55), (-0.2 * d, 0.45), (0.45 * d, 0.5), (0.7 * d, 0.35), (0.75 * d, 0.4),
            (0.55 * d, 1.0), (0.3 * d, 0.95), (0.0, 0.8), (-0.75 * d, 0.8)]
    cv.polygon(_front(cam, x, z, [(px * k, py * k) for px, py in body]), MOTORCYCLE, paint, depth=z)


def rider(cv: Canvas, cam: Camera, x: float, z: float, k: float, motor: bool, side_view: bool,
          direction: int) -> None:
    """A cyclist or motorcyclist: the vehicle (bicycle/motorcycle labelId) and the rider (rider)."""
    if side_view:
        (motorcycle_side if motor else bicycle_side)(cv, cam, x, z, k, direction)
    else:  # seen from behind or the front: a narrow tyre and handlebar
        label = MOTORCYCLE if motor else BICYCLE
        paint = cv.paint("motorcycle" if motor else "bicycle")
        tw = (0.14 if motor else 0.05) * k
        cv.polygon(_front(cam, x, z, _box(-tw / 2, tw / 2, 0.0, 0.68 * k)), label,
                   cv.paint("tire") if motor else paint, depth=z)
        if motor:
            cv.polygon(_front(cam, x, z, _box(-0.3 * k, 0.3 * k, 0.4 * k, 0.85 * k)), label, paint, depth=z)
        cv.line([cam.project(x - 0.3 * k, 1.0 * k, z), cam.project(x + 0.3 * k, 1.0 * k, z)],
                0.04 * k * cam.scale(z), label, paint, depth=z)
    person(cv, cam, x + (-0.1 * k * direction if side_view else 0.0), z, 1.75 * k, label=RIDER,
           base=(0.9 if motor else 0.95) * k)


# ---------------------------------------------------------------- street furniture and vegetation
def lamp(cv: Canvas, cam: Camera, x: float, z: float, k: float, toward: int) -> None:
    """A street lamp: a thin pole with an arm reaching over the road (``toward`` = +-1)."""
    paint = cv.paint("pole")
    h = 7.0 * k
    u0, v0 = cam.project(x - 0.08 * k, 0.0, z)
    u1, v1 = cam.project(x + 0.08 * k, h, z)
    cv.rect(u0, v1, u1, v0, POLE, paint, depth=z)
    arm = [cam.project(x, h, z), cam.project(x + toward * 1.6 * k, h + 0.3 * k, z)]
    cv.line(arm, 0.1 * k * cam.scale(z), POLE, paint, depth=z)
    head = _front(cam, x + toward * 1.6 * k, z, _box(-0.35 * k, 0.35 * k, h + 0.1 * k, h + 0.35 * k))
    cv.polygon(head, POLE, paint, depth=z)
    glow = _front(cam, x + toward * 1.6 * k, z, _box(-0.25 * k, 0.25 * k, h + 0.05 * k, h + 0.12 * k))
    cv.polygon(glow, POLE, cv.paint("lamp"), depth=z)


def traffic_light(cv: Canvas, cam: Camera, x: float, z: float, k: float, overhang: float = 0.0) -> None:
    """A pole (pole) with a signal box (traffic light); ``overhang`` > 0 adds a mast arm over the road."""
    pole, box = cv.paint("pole"), cv.paint("light_box")
    h = (5.6 if overhang else 3.2) * k
    u0, v0 = cam.project(x - 0.07 * k, 0.0, z)
    u1, v1 = cam.project(x + 0.07 * k, h, z)
    cv.rect(u0, v1, u1, v0, POLE, pole, depth=z)
    bx = x
    if overhang:
        cv.line([cam.project(x, h, z), cam.project(x + overhang, h, z)], 0.12 * k * cam.scale(z), POLE, pole, depth=z)
        bx = x + overhang * 0.8
        top = h
    else:
        top = h + 0.2 * k
    cv.polygon(_front(cam, bx, z, _box(-0.17 * k, 0.17 * k, top - 0.95 * k, top)), TRAFFIC_LIGHT, box, depth=z)
    lit = int(cv.rng.integers(3))
    for i in range(3):
        y = top - (0.17 + 0.3 * i) * k
        paint = cv.paint("light_signal") if i == lit else box
        _disc(cv, cam, bx, y, z, 0.1 * k, TRAFFIC_LIGHT, paint)


def traffic_sign(cv: Canvas, cam: Camera, x: float, z: float, k: float) -> None:
    """A pole with a sign face: a disc, a triangle or a rectangle, with an inner mark."""
    pole, face, mark = cv.paint("pole"), cv.paint("sign"), cv.paint("sign_mark")
    h = cv.rng.uniform(2.2, 2.8) * k
    u0, v0 = cam.project(x - 0.05 * k, 0.0, z)
    u1, v1 = cam.project(x + 0.05 * k, h, z)
    cv.rect(u0, v1, u1, v0, POLE, pole, depth=z)
    shape = int(cv.rng.integers(3))
    c = h + 0.3 * k
    if shape == 0:
        _disc(cv, cam, x, c, z, 0.33 * k, TRAFFIC_SIGN, face)
        _disc(cv, cam, x, c, z, 0.2 * k, TRAFFIC_SIGN, mark)
    elif shape == 1:
        tri = [(-0.38 * k, c - 0.25 * k), (0.38 * k, c - 0.25 * k), (0.0, c + 0.4 * k)]
        cv.polygon(_front(cam, x, z, tri), TRAFFIC_SIGN, face, depth=z)
        inner = [(-0.2 * k, c - 0.15 * k), (0.2 * k, c - 0.15 * k), (0.0, c + 0.2 * k)]
        cv.polygon(_front(cam, x, z, inner), TRAFFIC_SIGN, mark, depth=z)
    else:
        cv.polygon(_front(cam, x, z, _box(-0.3 * k, 0.3 * k, c - 0.3 * k, c + 0.3 * k)), TRAFFIC_SIGN, face, depth=z)
        cv.polygon(_front(cam, x, z, _box(-0.05 * k, 0.05 * k, c - 0.2 * k, c + 0.2 * k)), TRAFFIC_SIGN, mark, depth=z)


def tree(cv: Canvas, cam: Camera, x: float, z: float, k: float) -> None:
    """A tree: a trunk and a crown of overlapping discs, all vegetation (as in Cityscapes)."""
    rng = cv.rng
    n = int(rng.integers(4, 8))
    r = rng.random(2 + 3 * n).tolist()  # one draw for the whole tree
    trunk_h, radius = (2.0 + 1.5 * r[0]) * k, (1.5 + 1.5 * r[1]) * k
    u0, v0 = cam.project(x - 0.15 * k, 0.0, z)
    u1, v1 = cam.project(x + 0.15 * k, trunk_h + radius, z)
    cv.rect(u0, v1, u1, v0, VEGETATION, cv.paint("trunk"), depth=z)
    leaves = cv.paint("leaves")
    cu, cv_ = cam.project(x, trunk_h + radius, z)
    s = cam.scale(z) * radius
    for i in range(n):
        dx, dy, rr = r[2 + 3 * i:5 + 3 * i]
        rad = (0.45 + 0.3 * rr) * s
        cv.ellipse(cu + (1.2 * dx - 0.6) * s, cv_ - (1.1 * dy - 0.5) * s, rad, rad, VEGETATION, leaves, depth=z)


def bumpy_top(cam: Camera, x: float, z0: float, z1: float, y0: float, height: float,
              rng: np.random.Generator, bumps: int) -> list[Point]:
    """A polygon in the plane X = x, from y0 up to a wavy top around ``height`` (hedges, tree lines)."""
    zs = np.linspace(z0, z1, bumps + 1)
    tops = height * rng.uniform(0.8, 1.2, bumps + 1)
    pts = [cam.project(x, y0, z0)] + [cam.project(x, float(t), float(zz)) for zz, t in zip(zs, tops)]
    return pts + [cam.project(x, y0, z1)]
