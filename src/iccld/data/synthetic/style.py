"""``DomainStyle``: every knob of the synthetic street-scene generator, one instance per domain.

``SOURCE_STYLE`` is the "game-like" domain (the GTA5 stand-in): flat shading, one saturated colour
per class, no texture, no sensor effects, a low wide-angle camera. ``TARGET_STYLE`` is the
"camera-like" domain (the Cityscapes stand-in): other colour palettes, per-object colour variation,
textures, haze, sky gradient and clouds, lighting and vignetting, a colour cast, blur and sensor
noise, an ego-vehicle hood, and different layout statistics (horizon row, focal length, object
densities). Both share the class semantics and the shapes. docs/synthetic.md documents every field
and says which ones create the domain gap.

Ranges are ``(low, high)`` tuples sampled uniformly per image; "mean" counts are Poisson means per
image. Lengths are metres in the scene, colours are RGB in 0..255. Tune with
``dataclasses.replace(TARGET_STYLE, noise=2.0)`` and pass the result to ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

Range = tuple[float, float]
RGB = tuple[int, int, int]

# Every material a primitive can be painted with. A palette must give colours for all of them.
MATERIALS: tuple[str, ...] = (
    "sky", "cloud", "road", "lane_marking", "curb", "sidewalk", "terrain", "building", "window",
    "door", "roof", "wall", "fence", "pole", "lamp", "light_box", "light_signal", "sign",
    "sign_mark", "leaves", "trunk", "hedge", "skin", "shirt", "pants", "hair", "car", "glass",
    "tire", "tail_light", "head_light", "plate", "truck", "bus", "train", "motorcycle", "bicycle",
    "ego",
)


@dataclass(frozen=True)
class DomainStyle:
    """All generator parameters of one domain. Every field is documented in docs/synthetic.md."""

    name: str
    # ---- camera and street layout ----
    horizon: Range              # horizon (vanishing point) row, as a fraction of the image height
    vanishing_jitter: float     # std of the vanishing point column, as a fraction of the width
    camera_height: Range        # metres above the road
    focal: Range                # focal length as a fraction of the image width (larger = narrower view)
    lanes: tuple[int, int]      # number of lanes (inclusive range)
    lane_width: Range           # metres
    sidewalk_width: Range       # metres
    segment_length: Range       # length of one building block / open stretch along the street, metres
    p_building: float           # probability that a stretch of the street side is a building block
    p_side_street: float        # probability that a stretch is a side street (road going sideways)
    building_height: Range      # metres
    building_setback: Range     # gap between sidewalk and facade, metres (terrain or pavement)
    p_wall: float               # open stretch: probability of a wall along the sidewalk
    p_fence: float              # open stretch: probability of a fence (else a hedge or nothing)
    p_hedge: float              # open stretch: probability of a hedge
    p_far_buildings: float      # probability that the street ends at a row of buildings (else open)
    far_distance: Range         # distance of that row, metres
    object_scale: Range         # multiplier on the size of people, vehicles and street furniture
    cars_per_lane: float        # mean moving cars per lane
    parked_cars: float          # mean parked cars per street side
    truck_fraction: float       # fraction of moving vehicles that are trucks
    bus_fraction: float         # fraction of moving vehicles that are buses
    p_train: float              # probability of a tram (class "train") in the middle of the road
    persons: float              # mean pedestrians per image
    riders: float               # mean cyclists/motorcyclists per image
    motorcycle_fraction: float  # fraction of riders on motorcycles (else bicycles)
    parked_bicycles: float      # mean parked bicycles per image
    trees: float                # mean trees per street side
    lamp_spacing: Range         # distance between street lamps, metres
    signs: float                # mean traffic signs per image
    p_traffic_lights: float     # probability of a signalised crossing in view
    clouds: float               # mean clouds per image
    p_ego_hood: float           # probability of the ego-vehicle hood (labelId 1, ignored) at the bottom
    # ---- appearance ----
    palette: Mapping[str, tuple[RGB, ...]]  # material -> colour choices (one drawn per object)
    color_jitter: float         # std of a per-object brightness offset, RGB units (0 = exact palette colours)
    chroma_jitter: float        # std of a per-object, per-channel offset, RGB units (tints)
    texture: Mapping[str, Range]  # material -> (fine, coarse) noise amplitude; missing = untextured
    face_shading: float         # side faces darker, top faces lighter by this fraction
    haze: float                 # fog density per metre: colours blend towards the sky colour with depth
    sky_gradient: float         # sky brightens by this much (RGB units) from top to horizon
    brightness: Range           # global gain
    contrast: Range             # global contrast around mid-grey
    color_cast: tuple[float, float, float]  # mean per-channel gain (R, G, B)
    cast_jitter: float          # std of the per-image per-channel gain around color_cast
    lighting_gradient: float    # max amplitude of a linear illumination ramp across the image (gain)
    vignetting: float           # corner darkening (gain lost at the corners)
    gamma: Range                # output gamma
    blur: Range                 # Gaussian blur sigma, pixels at the 256-pixel-wide size (scaled with width)
    noise: float                # std of per-pixel sensor noise, RGB units
    chroma_noise: float         # std of per-pixel, per-channel noise, RGB units


SOURCE_STYLE = DomainStyle(
    name="source",
    horizon=(0.42, 0.52), vanishing_jitter=0.06, camera_height=(1.1, 1.6), focal=(0.6, 0.8),
    lanes=(2, 4), lane_width=(3.2, 3.8), sidewalk_width=(2.0, 4.0), segment_length=(12.0, 40.0),
    p_building=0.55, p_side_street=0.1, building_height=(8.0, 35.0), building_setback=(0.0, 6.0),
    p_wall=0.3, p_fence=0.3, p_hedge=0.25, p_far_buildings=0.5, far_distance=(60.0, 150.0),
    object_scale=(1.0, 1.15),
    cars_per_lane=1.4, parked_cars=1.5, truck_fraction=0.15, bus_fraction=0.08, p_train=0.03,
    persons=2.5, riders=0.8, motorcycle_fraction=0.55, parked_bicycles=0.4, trees=2.0,
    lamp_spacing=(20.0, 30.0), signs=1.5, p_traffic_lights=0.4, clouds=0.0, p_ego_hood=0.0,
    palette={
        "sky": ((90, 160, 250),), "cloud": ((240, 240, 250),),
        "road": ((110, 105, 125),), "lane_marking": ((250, 250, 250),), "curb": ((190, 170, 180),),
        "sidewalk": ((215, 175, 185),), "terrain": ((150, 205, 95),),
        "building": ((215, 120, 80), (225, 205, 140), (175, 175, 170)),
        "window": ((60, 90, 140),), "door": ((120, 70, 40),), "roof": ((120, 60, 50),),
        "wall": ((150, 110, 170),), "fence": ((210, 160, 110),), "pole": ((185, 185, 185),),
        "lamp": ((255, 255, 200),), "light_box": ((255, 180, 0),),
        "light_signal": ((255, 40, 40), (40, 255, 80)), "sign": ((255, 235, 0),),
        "sign_mark": ((230, 40, 40),), "leaves": ((50, 175, 50),), "trunk": ((125, 90, 50),),
        "hedge": ((40, 150, 60),), "skin": ((240, 190, 150),), "shirt": ((235, 40, 80), (40, 90, 230), (250, 250, 250)),
        "pants": ((60, 40, 120),), "hair": ((70, 40, 20),),
        "car": ((20, 60, 240), (0, 140, 255), (230, 30, 30), (235, 235, 240)), "glass": ((70, 105, 150),), "tire": ((30, 30, 35),),
        "tail_light": ((255, 0, 0),), "head_light": ((255, 255, 230),), "plate": ((245, 245, 245),),
        "truck": ((240, 140, 20),), "bus": ((40, 200, 200),), "train": ((200, 60, 200),),
        "motorcycle": ((160, 0, 255),), "bicycle": ((200, 20, 40),), "ego": ((20, 20, 20),),
    },
    color_jitter=0.0, chroma_jitter=0.0, texture={}, face_shading=0.0, haze=0.0, sky_gradient=0.0,
    brightness=(1.0, 1.0), contrast=(1.0, 1.0), color_cast=(1.0, 1.0, 1.0), cast_jitter=0.0,
    lighting_gradient=0.0, vignetting=0.0, gamma=(1.0, 1.0), blur=(0.0, 0.0), noise=0.0,
    chroma_noise=0.0,
)

TARGET_STYLE = DomainStyle(
    name="target",
    horizon=(0.34, 0.44), vanishing_jitter=0.04, camera_height=(1.3, 1.8), focal=(0.8, 1.0),
    lanes=(2, 3), lane_width=(2.8, 3.4), sidewalk_width=(2.0, 5.0), segment_length=(10.0, 30.0),
    p_building=0.65, p_side_street=0.1, building_height=(8.0, 20.0), building_setback=(0.0, 3.0),
    p_wall=0.25, p_fence=0.3, p_hedge=0.35, p_far_buildings=0.7, far_distance=(50.0, 120.0),
    object_scale=(0.9, 1.05),
    cars_per_lane=0.9, parked_cars=3.5, truck_fraction=0.06, bus_fraction=0.05, p_train=0.05,
    persons=5.0, riders=1.5, motorcycle_fraction=0.2, parked_bicycles=2.0, trees=4.5,
    lamp_spacing=(25.0, 40.0), signs=2.5, p_traffic_lights=0.5, clouds=3.0, p_ego_hood=1.0,
    palette={
        "sky": ((120, 165, 225), (145, 180, 225), (175, 195, 220)), "cloud": ((235, 235, 235),),
        "road": ((88, 86, 94), (96, 93, 98)), "lane_marking": ((200, 200, 195),),
        "curb": ((165, 160, 160),), "sidewalk": ((175, 155, 160), (160, 150, 150)),
        "terrain": ((125, 160, 80), (140, 165, 95)),
        "building": ((150, 140, 125), (120, 110, 100), (175, 165, 150), (95, 95, 100), (160, 120, 100)),
        "window": ((45, 50, 55), (80, 90, 100)), "door": ((60, 50, 45),), "roof": ((90, 80, 75),),
        "wall": ((135, 130, 120), (110, 110, 115)), "fence": ((95, 100, 95), (130, 115, 95)),
        "pole": ((105, 110, 110), (80, 85, 85)), "lamp": ((220, 220, 210),),
        "light_box": ((35, 35, 35),), "light_signal": ((230, 80, 60), (120, 220, 120), (240, 180, 60)),
        "sign": ((30, 70, 160), (200, 200, 200), (190, 40, 40)), "sign_mark": ((240, 240, 240),),
        "leaves": ((70, 110, 45), (85, 125, 50), (60, 95, 45)), "trunk": ((75, 65, 55),),
        "hedge": ((60, 100, 40),),
        "skin": ((210, 170, 140), (150, 110, 85)),
        "shirt": ((40, 40, 45), (170, 160, 150), (70, 80, 110), (150, 40, 50), (200, 200, 195)),
        "pants": ((35, 35, 45), (60, 65, 90), (120, 110, 95)), "hair": ((40, 30, 25), (120, 95, 70)),
        "car": ((215, 215, 215), (30, 30, 32), (130, 135, 140), (45, 60, 120), (140, 35, 35),
                (175, 175, 170)),
        "glass": ((40, 50, 60),), "tire": ((25, 25, 25),), "tail_light": ((170, 30, 30),),
        "head_light": ((210, 210, 200),), "plate": ((210, 210, 200),),
        "truck": ((200, 200, 195), (150, 40, 30), (60, 80, 120)), "bus": ((215, 180, 40), (200, 60, 50)),
        "train": ((220, 220, 210), (200, 40, 40)), "motorcycle": ((40, 40, 45), (130, 130, 135)),
        "bicycle": ((30, 30, 30), (110, 110, 110)), "ego": ((35, 38, 40),),
    },
    color_jitter=14.0, chroma_jitter=4.0,
    texture={
        "road": (9.0, 10.0), "sidewalk": (8.0, 8.0), "terrain": (14.0, 14.0), "building": (6.0, 12.0),
        "wall": (8.0, 8.0), "leaves": (22.0, 10.0), "hedge": (18.0, 8.0), "trunk": (8.0, 0.0),
        "sky": (0.0, 6.0), "cloud": (0.0, 10.0), "curb": (6.0, 0.0), "roof": (6.0, 4.0),
    },
    face_shading=0.3, haze=0.006, sky_gradient=25.0,
    brightness=(0.75, 1.15), contrast=(0.8, 1.05), color_cast=(0.97, 1.0, 1.04), cast_jitter=0.04,
    lighting_gradient=0.15, vignetting=0.25, gamma=(0.85, 1.15), blur=(0.4, 0.9), noise=4.0,
    chroma_noise=2.0,
)


def check_style(style: DomainStyle) -> None:
    """Raise ``ConfigError`` when a palette lacks a material or a range is reversed."""
    from ...errors import ConfigError

    missing = [m for m in MATERIALS if m not in style.palette or not style.palette[m]]
    if missing:
        raise ConfigError(f"DomainStyle {style.name!r}: palette has no colour for {', '.join(missing)}")
    unknown = sorted(set(style.texture) - set(MATERIALS))
    if unknown:
        raise ConfigError(f"DomainStyle {style.name!r}: texture names unknown materials {unknown}")
    for field_name, value in vars(style).items():
        if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            if value[0] > value[1]:
                raise ConfigError(f"DomainStyle {style.name!r}: {field_name}={value} has low > high")
