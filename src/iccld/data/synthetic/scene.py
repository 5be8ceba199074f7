"""One street scene: camera, road, sidewalks, the two street sides, far end, and everything standing.

Drawing order (painter's algorithm): sky and clouds, ground, far end of the street, road and
sidewalks, the side structures (facades, walls, fences, hedges, back-yard trees) far to near, then
the standing objects (vehicles, people, riders, poles, signs, lights, street trees) far to near,
then the ego-vehicle hood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .canvas import Camera, Canvas
from .objects import (BUILDING, EGO_VEHICLE, FENCE, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION, VEHICLE_SIZE,
                       WALL, bicycle_side, bumpy_top, lamp, person, rider, traffic_light, traffic_sign, tree,
                       vehicle)
from .style import DomainStyle

FAR = 600.0   # "infinitely" far, metres
NEAR = 0.6    # ground geometry starts here (projects below the image bottom)


Drawables = list[tuple[float, Callable[[], None]]]  # (depth, draw): drawn far to near


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


@dataclass(frozen=True)
class Street:
    """The sampled street geometry (metres); side ``s`` is -1 (left) or +1 (right)."""

    cam: Camera
    k: float                  # object scale of this image
    lanes: int
    lane_w: float
    left: float               # road edges
    right: float
    oncoming: int             # lanes 0..oncoming-1 drive towards the camera
    edge: dict[int, float]    # road edge (curb) of side s
    prop: dict[int, float]    # property line of side s: the sidewalk ends here
    z_end: float              # where the street ends
    crossing: Optional[float]  # depth of the signalised zebra crossing, if any


def draw_scene(cv: Canvas, style: DomainStyle, rng: np.random.Generator) -> None:
    """Sample one street scene from ``style`` and draw it onto ``cv``."""
    W, H = cv.width, cv.height
    cam = Camera(f=_u(rng, style.focal) * W, cx=W * (0.5 + rng.normal(0.0, style.vanishing_jitter)),
                 cy=_u(rng, style.horizon) * H, height=_u(rng, style.camera_height))
    k = _u(rng, style.object_scale)

    # sky and clouds
    cv.polygon([(0, 0), (W, 0), (W, H), (0, H)], SKY, cv.paint("sky"))
    for _ in range(rng.poisson(style.clouds)):
        cloud = cv.paint("cloud")
        cx, cy, r = rng.uniform(0, W), rng.uniform(0, cam.cy * 0.7), rng.uniform(0.03, 0.12) * W
        for _ in range(int(rng.integers(3, 7))):
            cv.ellipse(cx + rng.uniform(-1.5, 1.5) * r, cy + rng.uniform(-0.3, 0.3) * r, r * rng.uniform(0.5, 1.0),
                       r * rng.uniform(0.25, 0.45), SKY, cloud)
    cv.polygon([(0, cam.cy), (W, cam.cy), (W, H), (0, H)], TERRAIN, cv.paint("terrain"), depth=300.0)

    # the street: lanes around the camera, one sidewalk per side
    lanes = int(rng.integers(style.lanes[0], style.lanes[1] + 1))
    lane_w = _u(rng, style.lane_width)
    my_lane = lanes - 1 - int(rng.integers(0, max(1, lanes // 2)))  # right-hand traffic
    left = -(my_lane + 0.5 + rng.uniform(-0.2, 0.2)) * lane_w
    right = left + lanes * lane_w
    oncoming = lanes // 2  # lanes 0..oncoming-1 drive towards the camera
    edge = {-1: left, 1: right}
    walk = {s: _u(rng, style.sidewalk_width) for s in (-1, 1)}
    prop = {s: edge[s] + s * walk[s] for s in (-1, 1)}  # property line: sidewalk ends here

    far_row = rng.random() < style.p_far_buildings
    z_end = _u(rng, style.far_distance) if far_row else FAR
    _far_end(cv, cam, rng, style, z_end, far_row)

    road = cv.paint("road")
    cv.polygon(cam.ground_quad(left, right, NEAR, z_end), ROAD, road, depth=20.0)
    marking = cv.paint("lane_marking")
    for i in range(1, lanes):
        xb, solid, z = left + i * lane_w, i == oncoming, NEAR + rng.uniform(0, 9)
        while z < min(z_end, 120.0):
            length = (min(z_end, 120.0) - z) if solid else 3.0
            cv.polygon(cam.ground_quad(xb - 0.08, xb + 0.08, z, z + length), ROAD, marking, depth=z)
            z += 9.0 if not solid else 1e9
    crossing = _u(rng, (12.0, 45.0)) if rng.random() < style.p_traffic_lights else None
    if crossing is not None and crossing + 3.0 < z_end:
        for xs in np.arange(left + 0.3, right - 0.5, 1.0):
            cv.polygon(cam.ground_quad(xs, xs + 0.5, crossing, crossing + 3.0), ROAD, marking, depth=crossing)

    st = Street(cam, k, lanes, lane_w, left, right, oncoming, edge, prop, z_end, crossing)
    structures: Drawables = []
    standing: Drawables = []
    for s in (-1, 1):
        _street_side(cv, rng, style, st, s, structures)
    for _, draw in sorted(structures, key=lambda t: -t[0]):
        draw()
    _furniture(cv, rng, style, st, standing)
    _traffic(cv, rng, style, st, standing)
    _people(cv, rng, style, st, standing)
    for _, draw in sorted(standing, key=lambda t: -t[0]):
        draw()

    if rng.random() < style.p_ego_hood:  # the camera car's bonnet, labelId 1 (ignored in training)
        top = H * rng.uniform(0.88, 0.93)
        xs = np.linspace(0, W, 17)
        ys = top + (H - top) * 0.6 * ((xs - W / 2) / (W / 2)) ** 2
        cv.polygon([(0, H)] + list(zip(xs.tolist(), ys.tolist())) + [(W, H)], EGO_VEHICLE, cv.paint("ego"))


def _far_end(cv: Canvas, cam: Camera, rng, style: DomainStyle, z_end: float, far_row: bool) -> None:
    """Across the street end: a row of buildings facing the camera, or a distant tree line."""
    if far_row:
        x = -120.0
        while x < 120.0:
            w, h = rng.uniform(8, 25), _u(rng, style.building_height)
            cv.polygon(cam.front_quad(x, x + w, 0.0, h, z_end + 8.0), BUILDING, cv.paint("building"),
                       depth=z_end)
            x += w
        cv.polygon(cam.ground_quad(-120, 120, z_end, z_end + 8.0), ROAD, cv.paint("road"), depth=z_end)
    elif rng.random() < 0.6:
        zt = rng.uniform(200, 400)
        pts = [cam.project(x, float(rng.uniform(8, 20)), zt) for x in np.linspace(-400, 400, 40)]
        pts = [cam.project(-400, 0, zt)] + pts + [cam.project(400, 0, zt)]
        cv.polygon(pts, VEGETATION, cv.paint("leaves"), depth=zt)


def _street_side(cv: Canvas, rng, style: DomainStyle, st: Street, s: int, structures: Drawables) -> None:
    """Sidewalk and curb now; facades, walls, fences, hedges and yard trees into ``structures``."""
    cam, edge, prop, z_end = st.cam, st.edge[s], st.prop[s], st.z_end
    cv.polygon(cam.ground_quad(min(edge, prop), max(edge, prop), NEAR, z_end), SIDEWALK,
               cv.paint("sidewalk"), depth=15.0)
    curb = cv.paint("curb")
    cv.polygon(cam.ground_quad(min(edge, edge + s * 0.2), max(edge, edge + s * 0.2), NEAR, z_end),
               SIDEWALK, curb, depth=15.0)
    z0 = NEAR
    while z0 < z_end:
        z1 = min(z0 + _u(rng, style.segment_length), z_end)
        r = rng.random()
        if r < style.p_side_street:
            xa = edge - s * 0.1  # overlap the road a little: no sliver of curb along the shared edge
            cv.polygon(cam.ground_quad(min(xa, edge + s * 80), max(xa, edge + s * 80), z0, z1 - 2.0),
                       ROAD, cv.paint("road"), depth=z0)
        elif r < style.p_side_street + style.p_building:
            _building(cv, cam, rng, style, s, prop, z0, z1, structures)
        else:
            _open_stretch(cv, cam, rng, style, s, prop, z0, z1, st.k, structures)
        z0 = z1


def _building(cv: Canvas, cam: Camera, rng, style: DomainStyle, s: int, prop: float, z0: float, z1: float,
              structures: Drawables) -> None:
    """A block between z0 and z1: optional setback ground, facade with windows, end wall."""
    setback = _u(rng, style.building_setback) if rng.random() < 0.5 else 0.0
    xf = prop + s * setback
    if setback > 0:
        kind = ("terrain", TERRAIN) if rng.random() < 0.5 else ("sidewalk", SIDEWALK)
        cv.polygon(cam.ground_quad(min(prop, xf), max(prop, xf), z0, z1), kind[1], cv.paint(kind[0]), depth=z0)
    h = _u(rng, style.building_height)
    paint, window, roof = cv.paint("building"), cv.paint("window"), cv.paint("roof")
    col, floor = rng.uniform(2.5, 4.0), rng.uniform(2.8, 3.5)

    def draw() -> None:
        cv.polygon(cam.side_quad(xf, 0.0, h, z0, z1), BUILDING, paint, depth=z0, shade=-1)
        cv.polygon(cam.side_quad(xf, h - 0.6, h, z0, z1), BUILDING, roof, depth=z0, shade=-1)
        for zc in np.arange(z0 + col / 2, z1 - 0.8, col):
            ua, _ = cam.project(xf, 0.0, zc - 0.6)
            ub, _ = cam.project(xf, 0.0, zc + 0.6)
            if abs(ua - ub) < 1.0:  # windows further along are narrower still: leave them out
                break
            if max(ua, ub) < 0 or min(ua, ub) > cv.width:
                continue
            for yf in np.arange(floor * 0.35, h - 1.5, floor):
                quad = cam.side_quad(xf, yf, yf + 1.5, zc - 0.6, zc + 0.6)
                if max(v for _, v in quad) < 0:  # above the image top, and so are the floors above
                    break
                cv.polygon(quad, BUILDING, window, depth=zc, shade=-1)
        # the near end wall of the block, facing the camera
        cv.polygon(cam.front_quad(min(xf, xf + s * 15), max(xf, xf + s * 15), 0.0, h, z0), BUILDING,
                   paint, depth=z0)
    structures.append((z0, draw))


def _open_stretch(cv: Canvas, cam: Camera, rng, style: DomainStyle, s: int, prop: float, z0: float, z1: float,
                  k: float, structures: Drawables) -> None:
    """Terrain behind the sidewalk, yard trees, maybe a distant building or tree line, and a wall,
    fence or hedge along the property line."""
    cv.polygon(cam.ground_quad(min(prop, prop + s * 80), max(prop, prop + s * 80), z0, z1), TERRAIN,
               cv.paint("terrain"), depth=z0)
    for _ in range(int(rng.integers(0, 4))):  # yard trees behind the boundary
        x, z = prop + s * rng.uniform(3, 15), rng.uniform(z0, z1)
        structures.append((z + 0.5, lambda x=x, z=z: tree(cv, cam, x, z, k)))
    if rng.random() < 0.4:  # a distant building or tree line behind the yard
        xb = prop + s * rng.uniform(15, 35)
        if rng.random() < 0.5:
            h, paint = _u(rng, style.building_height), cv.paint("building")
            structures.append((z0 + 60, lambda: cv.polygon(cam.side_quad(xb, 0, h, z0, z1), BUILDING, paint,
                                                            depth=z0, shade=-1)))
        else:
            pts = bumpy_top(cam, xb, z0, z1, 0.0, rng.uniform(6, 12), rng, 6)
            paint = cv.paint("leaves")
            structures.append((z0 + 60, lambda: cv.polygon(pts, VEGETATION, paint, depth=z0)))
    r = rng.random()
    if r < style.p_wall:
        h, paint = rng.uniform(0.8, 2.2), cv.paint("wall")

        def wall() -> None:
            cv.polygon(cam.side_quad(prop, 0.0, h, z0, z1), WALL, paint, depth=z0, shade=-1)
            cv.polygon(cam.top_quad(min(prop, prop + s * 0.3), max(prop, prop + s * 0.3), h, z0, z1), WALL,
                       paint, depth=z0, shade=1)
            cv.polygon(cam.front_quad(min(prop, prop + s * 0.3), max(prop, prop + s * 0.3), 0.0, h, z0), WALL,
                       paint, depth=z0)
        structures.append((z0, wall))
    elif r < style.p_wall + style.p_fence:
        h, paint = rng.uniform(1.0, 2.0), cv.paint("fence")

        def fence() -> None:
            step = 2.5 if rng.random() < 0.5 else 1.0
            for zp in np.arange(z1, z0, -step):  # posts, far to near
                u0, v0 = cam.project(prop, 0.0, zp)
                u1, v1 = cam.project(prop, h, zp)
                cv.rect(u0 - 0.05 * cam.scale(zp), v1, u0 + 0.05 * cam.scale(zp), v0, FENCE, paint, depth=zp)
            for y in (0.25 * h, 0.95 * h):
                cv.polygon(cam.side_quad(prop, y - 0.06, y + 0.06, z0, z1), FENCE, paint, depth=z0)
        structures.append((z0, fence))
    elif r < style.p_wall + style.p_fence + style.p_hedge:
        h, paint = rng.uniform(0.8, 1.6), cv.paint("hedge")
        pts = bumpy_top(cam, prop, z0, z1, 0.0, h, rng, max(2, int((z1 - z0) / 2)))

        def hedge() -> None:
            cv.polygon(cam.top_quad(min(prop, prop + s * 0.8), max(prop, prop + s * 0.8), h, z0, z1),
                       VEGETATION, paint, depth=z0, shade=1)
            cv.polygon(pts, VEGETATION, paint, depth=z0, shade=-1)
        structures.append((z0, hedge))


def _furniture(cv: Canvas, rng, style: DomainStyle, st: Street, standing: Drawables) -> None:
    """Street lamps, traffic signs, traffic lights and sidewalk trees."""
    cam, k, edge, prop, z_end, crossing = st.cam, st.k, st.edge, st.prop, st.z_end, st.crossing
    for s in (-1, 1):
        z = rng.uniform(3, 15)
        spacing = _u(rng, style.lamp_spacing)
        while z < min(z_end, 150):
            x = edge[s] + s * 0.5
            standing.append((z, lambda x=x, z=z, s=s: lamp(cv, cam, x, z, k, -s)))
            z += spacing
        for _ in range(rng.poisson(style.trees)):
            z = rng.uniform(4, min(z_end, 90))
            x = prop[s] - s * rng.uniform(0.6, 1.2)
            standing.append((z, lambda x=x, z=z: tree(cv, cam, x, z, k)))
    for _ in range(rng.poisson(style.signs)):
        s, z = int(rng.choice([-1, 1])), rng.uniform(4, min(z_end, 60))
        x = edge[s] + s * rng.uniform(0.4, 0.9)
        standing.append((z, lambda x=x, z=z: traffic_sign(cv, cam, x, z, k)))
    if crossing is not None and crossing < z_end:
        for s in (-1, 1):
            x, z = edge[s] + s * 0.5, crossing - 0.5
            standing.append((z, lambda x=x, z=z: traffic_light(cv, cam, x, z, k)))
        if rng.random() < 0.6:
            x, z, over = edge[1] + 0.5, crossing + 3.5, -(edge[1] - edge[-1]) * 0.45
            standing.append((z, lambda: traffic_light(cv, cam, x, z, k, overhang=over)))


def _traffic(cv: Canvas, rng, style: DomainStyle, st: Street, standing: Drawables) -> None:
    """Moving vehicles in the lanes, parked cars along the curbs, sometimes a tram."""
    cam, k, edge, z_end, left, lane_w, oncoming = st.cam, st.k, st.edge, st.z_end, st.left, st.lane_w, st.oncoming
    for lane in range(st.lanes):
        taken: list[tuple[float, float]] = []
        for _ in range(rng.poisson(style.cars_per_lane)):
            r = rng.random()
            kind = "truck" if r < style.truck_fraction else (
                "bus" if r < style.truck_fraction + style.bus_fraction else "car")
            length = VEHICLE_SIZE[kind][1] * k
            z = rng.uniform(3.5, min(z_end - length, 90))
            if z < 3.5 or any(z < b + 2 and z + length > a - 2 for a, b in taken):
                continue
            taken.append((z, z + length))
            x = left + (lane + 0.5) * lane_w + rng.uniform(-0.3, 0.3)
            standing.append((z, lambda kind=kind, x=x, z=z, away=lane >= oncoming:
                             vehicle(cv, cam, kind, x, z, k, away)))
    for s in (-1, 1):
        taken = []
        for _ in range(rng.poisson(style.parked_cars)):
            z = rng.uniform(2.5, min(z_end - 5, 70))
            if z < 2.5 or any(abs(z - t) < 5.2 * k for t in taken):
                continue
            taken.append(z)
            x = edge[s] - s * (1.1 + rng.uniform(0, 0.2))
            standing.append((z, lambda x=x, z=z, away=rng.random() < 0.7: vehicle(cv, cam, "car", x, z, k, away)))
    if rng.random() < style.p_train:
        x = left + oncoming * lane_w
        z = rng.uniform(10, 50)
        if z + 24 < z_end:
            standing.append((z, lambda: vehicle(cv, cam, "train", x, z, k, True)))


def _people(cv: Canvas, rng, style: DomainStyle, st: Street, standing: Drawables) -> None:
    """Pedestrians on the sidewalks (and on the crossing), riders on the road, parked bicycles."""
    cam, k, edge, prop, z_end, crossing = st.cam, st.k, st.edge, st.prop, st.z_end, st.crossing
    left, right = st.left, st.right
    for _ in range(rng.poisson(style.persons)):
        if crossing is not None and rng.random() < 0.25:
            x, z = rng.uniform(left, right), crossing + rng.uniform(0.5, 2.5)
        else:
            s = int(rng.choice([-1, 1]))
            x, z = rng.uniform(*sorted((edge[s] + s * 0.4, prop[s] - s * 0.3))), rng.uniform(2.5, min(z_end, 70))
        h, stride = rng.uniform(1.55, 1.9) * k, rng.uniform(-0.12, 0.12)
        standing.append((z, lambda x=x, z=z, h=h, st=stride: person(cv, cam, x, z, h, stride=st)))
    for _ in range(rng.poisson(style.riders)):
        motor = rng.random() < style.motorcycle_fraction
        if crossing is not None and rng.random() < 0.4:  # crossing the street: seen from the side
            x, z, side, d = rng.uniform(left, right), crossing + rng.uniform(0.5, 2.5), True, int(rng.choice([-1, 1]))
        else:
            x, z, side, d = right - rng.uniform(0.6, 1.4), rng.uniform(4, min(z_end, 60)), False, 1
        standing.append((z, lambda x=x, z=z, m=motor, sv=side, d=d: rider(cv, cam, x, z, k, m, sv, d)))
    for _ in range(rng.poisson(style.parked_bicycles)):
        s = int(rng.choice([-1, 1]))
        z = rng.uniform(3, min(z_end, 50))
        x = prop[s] - s * 1.0
        for i in range(int(rng.integers(1, 4))):  # a rack: bikes perpendicular to the curb, side by side
            zi = z + 0.7 * i
            standing.append((zi, lambda x=x, z=zi: bicycle_side(cv, cam, x, z, k, -1)))
