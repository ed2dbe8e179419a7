"""Seeded synthetic thin sections (spec C.5, a proposal: the thesis's images are private).

Each sample is a virtual section: a square of `SECTION_HALF * 2` units of clay matrix holding
grains drawn from the recipe of its fabric class. An image is a view of that section: a field
centre, a field width (10X: 1 unit, 2.5X: `zoom` units, so the 2.5X field contains the 10X
fields), a stage rotation and a polarisation. PPL and XPL of a field are rendered from the same
grains, so they share geometry; a rotation turns the specimen under fixed polarisers, so the
image rotates and every anisotropic grain's XPL brightness follows sin^2(2 (theta_grain + rotation))
(extinction when its optic axis meets a polariser).

Minerals and class cues (spec C.5):
  calcite: rhombic grains, pale in PPL, pastel high-order colours in XPL;
  quartz: angular grains, colourless in PPL, grey-white in XPL with extinction;
  dolomite: euhedral rhombs with a cloudy core (A: dominant; B: with calcareous and siliceous fragments);
  carbonate A/B/C/D: shared calcareous fragments + cue (A: microfossils = small chambered circles,
  B: quartz specks, C: siliceous fragments, D: dark-red iron-oxide nodules);
  shell: elongated thin arcs; basalt: dark fragments with light laths.
Distractors: calcareous fragments in most classes (a few in the quartz class, as in Fig. 5.66);
some class-2 samples are "intermediate": microfossils and quartz specks (as sample J3).

Every image comes with a per-pixel mask (`mask_for`): R = mineral code (`MINERALS`), G = grain
instance (mod 256), B = the grain's XPL brightness x 255 (same in the PPL mask), from which the
class-discriminative mask (`CUES`), the distractor mask and extinct/bright quartz are read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

MINERALS = ("matrix", "calcite", "quartz", "dolomite", "calcareous", "microfossil", "quartz_speck",
            "siliceous", "iron_oxide", "shell", "basalt")
CODE = {name: i for i, name in enumerate(MINERALS)}
FABRICS = {1: "calcite", 2: "carbonate A", 3: "carbonate B", 4: "dolomite A", 5: "dolomite B", 6: "quartz",
           7: "shell", 8: "basalt", 9: "carbonate C", 10: "carbonate D"}
#: minerals whose pixels form the class-discriminative mask of each class (spec C.3 / C.5)
CUES = {1: ("calcite",), 2: ("microfossil",), 3: ("quartz_speck",), 4: ("dolomite",), 5: ("dolomite", "siliceous"),
        6: ("quartz",), 7: ("shell",), 8: ("basalt",), 9: ("siliceous",), 10: ("iron_oxide",)}
DISTRACTORS = ("calcareous",)
#: Table 9 of the paper: site, age, samples
SITES = (("Tell el-Far'ah (North)", 55), ("Khirbat al-Batrawy", 40), ("Khirbat Iskandar", 35), ("Bethlehem", 23),
         ("Ebla", 18), ("Jericho", 7))
MAGNIFICATIONS = ("2.5X", "10X")
POLARISATIONS = ("PPL", "XPL")
SECTION_HALF = 3.2  # the section spans [-3.2, 3.2]^2 units: a rotated 2.5X field (zoom 4) fits in it
SPECKLE_STEP = 0.01  # units per cell of the section's speckle field
SUBPIXEL_RADIUS = 0.8  # grains with a smaller radius in pixels are drawn as one blended pixel

#: per class: (mineral, grains per unit^2, size range in units); sizes are radii (rhombs: side)
RECIPES: dict[int, tuple[tuple[str, float, tuple[float, float]], ...]] = {
    1: (("calcareous", 0.8, (0.07, 0.13)), ("calcite", 9.0, (0.10, 0.19))),
    2: (("calcareous", 5.0, (0.07, 0.15)), ("microfossil", 3.2, (0.065, 0.095))),
    3: (("calcareous", 5.0, (0.07, 0.15)), ("quartz_speck", 10.0, (0.02, 0.034))),
    4: (("calcareous", 0.8, (0.07, 0.13)), ("dolomite", 9.0, (0.09, 0.16))),
    5: (("calcareous", 2.5, (0.07, 0.14)), ("siliceous", 2.0, (0.06, 0.11)), ("dolomite", 4.0, (0.09, 0.15))),
    6: (("calcareous", 0.6, (0.07, 0.13)), ("quartz", 8.0, (0.06, 0.12))),
    7: (("calcareous", 3.0, (0.07, 0.14)), ("shell", 5.0, (0.13, 0.24))),
    8: (("calcareous", 0.8, (0.07, 0.12)), ("basalt", 3.5, (0.09, 0.16))),
    9: (("calcareous", 4.0, (0.07, 0.14)), ("siliceous", 3.0, (0.06, 0.11))),
    10: (("calcareous", 4.0, (0.07, 0.14)), ("iron_oxide", 3.5, (0.03, 0.055))),
}
INTERMEDIATE_EXTRA = (("quartz_speck", 8.0, (0.02, 0.034)),)  # what an intermediate class-2 sample adds
CUE_KINDS = {mineral for minerals in CUES.values() for mineral in minerals}

CALCITE_XPL = np.array([[1.0, 0.55, 0.80], [0.50, 1.0, 0.62], [1.0, 0.93, 0.50], [0.55, 0.72, 1.0]])
DOLOMITE_XPL = np.array([[0.93, 0.86, 0.70], [0.88, 0.80, 0.66], [0.95, 0.90, 0.78]])


@dataclass
class Grain:
    kind: str
    x: float
    y: float
    radius: float          # bounding radius (units)
    angle: float           # shape orientation (rad)
    optic: float           # optic orientation theta_grain (rad)
    shape: str             # rhomb | poly | ellipse | arc | chambers
    params: dict = field(default_factory=dict)
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Section:
    sample_id: str
    class_id: int
    grains: list[Grain]
    matrix_ppl: np.ndarray        # (3,) base colour of the clay in PPL
    waves: np.ndarray             # (n, 4): kx, ky, phase, amplitude of the low-frequency matrix noise
    speckle: np.ndarray           # (S, S) fine texture field over the section, in [0, 1]
    speckle2: np.ndarray          # a second, independent one (microcrystalline XPL texture)
    noise_seed: int


@dataclass(frozen=True)
class View:
    centre: tuple[float, float]
    width: float
    rotation_deg: float = 0.0


@dataclass(frozen=True)
class GeneratorConfig:
    """What determines a synthetic dataset; its hash names the cache directory."""

    num_samples: int = 178
    image_size: int = 96
    images_per_view: int = 2          # images per (polarisation, magnification): 2 x 2 x 2 = 8 per sample
    min_per_class: int = 8
    intermediate_fraction: float = 0.3
    zoom: float = 4.0                 # 2.5X field width / 10X field width
    density: float = 1.0              # multiplies every recipe density
    noise: float = 0.02               # per-pixel sensor noise (std)
    seed: int = 0
    rotation_samples: int = 1         # per class in `rotation_classes`: samples that get a rotation series
    rotation_classes: tuple[int, ...] = (1, 6)
    rotation_angles: tuple[float, ...] = (30.0, 60.0)
    num_classes: int = 10

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------- sections

def class_counts(num_samples: int, num_classes: int, floor: int, rng: np.random.Generator) -> np.ndarray:
    """Samples per class: `floor` each, the rest multinomial (uniform); fewer samples than
    classes x floor shrink the floor."""
    floor = min(floor, num_samples // num_classes)
    rest = num_samples - floor * num_classes
    return floor + rng.multinomial(rest, np.full(num_classes, 1.0 / num_classes))


def sample_table(config: GeneratorConfig) -> list[dict]:
    """One dict per sample: sample_id, class_id, site, intermediate (seeded by config.seed)."""
    rng = np.random.default_rng([config.seed, 1])
    counts = class_counts(config.num_samples, config.num_classes, config.min_per_class, rng)
    classes = np.repeat(np.arange(1, config.num_classes + 1), counts)
    rng.shuffle(classes)
    weights = np.array([n for _, n in SITES], dtype=float)
    sites = rng.choice(len(SITES), size=len(classes), p=weights / weights.sum())
    rows = []
    class_two = np.flatnonzero(classes == 2)
    n_mid = int(round(config.intermediate_fraction * len(class_two))) if len(class_two) else 0
    if config.intermediate_fraction > 0 and len(class_two) >= 2:
        n_mid = max(1, n_mid)
    intermediate = set(rng.choice(class_two, size=n_mid, replace=False).tolist()) if n_mid else set()
    for i, (cls, site) in enumerate(zip(classes, sites)):
        rows.append({"sample_id": f"S{i:03d}", "class_id": int(cls), "site": SITES[site][0],
                     "intermediate": i in intermediate, "index": i})
    return rows


def _star_radii(rng: np.random.Generator, n: int, jitter: float) -> dict:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(1.0 - jitter, 1.0, n)
    # the outline, periodically extended so np.interp needs no wrap-around
    return {"angles": np.concatenate([angles - 2 * np.pi, angles, angles + 2 * np.pi]), "radii": np.tile(radii, 3)}


def make_grain(kind: str, x: float, y: float, size: float, rng: np.random.Generator) -> Grain:
    angle = float(rng.uniform(0, np.pi))
    optic = float(rng.uniform(0, np.pi))
    tint = tuple(float(t) for t in rng.normal(0, 0.03, 3))
    if kind in ("calcite", "dolomite"):
        euhedral = kind == "dolomite"
        sides = (size, size * (rng.uniform(0.95, 1.05) if euhedral else rng.uniform(0.6, 1.0)))
        acute = np.deg2rad(75.0 if euhedral else rng.uniform(60, 80))
        params = {"a": sides[0], "b": sides[1], "acute": float(acute), "colour": int(rng.integers(0, 4 if not euhedral else 3))}
        return Grain(kind, x, y, 0.5 * (sides[0] + sides[1]) * 1.05, angle, optic, "rhomb", params, tint)
    if kind in ("quartz", "quartz_speck", "siliceous", "calcareous", "basalt"):
        n, jitter = {"quartz": (6, 0.45), "quartz_speck": (5, 0.4), "siliceous": (7, 0.35),
                     "calcareous": (11, 0.25), "basalt": (7, 0.3)}[kind]
        params = _star_radii(rng, n, jitter)
        aspect = rng.uniform(0.65, 1.0) if kind != "calcareous" else rng.uniform(0.6, 0.95)
        params["aspect"] = float(aspect)
        if kind == "basalt":
            laths = []
            for _ in range(int(rng.integers(4, 8))):
                laths.append((float(rng.uniform(-0.5, 0.5) * size), float(rng.uniform(-0.5, 0.5) * size),
                              float(rng.uniform(0, np.pi)), float(rng.uniform(0.35, 0.7) * size),
                              float(rng.uniform(0.06, 0.11) * size)))
            params["laths"] = laths
        return Grain(kind, x, y, size, angle, optic, "poly", params, tint)
    if kind == "iron_oxide":
        return Grain(kind, x, y, size, angle, optic, "ellipse", {"a": size, "b": size * rng.uniform(0.7, 1.0)}, tint)
    if kind == "shell":
        thickness = size * rng.uniform(0.14, 0.2)
        span = np.deg2rad(rng.uniform(70, 150))
        return Grain(kind, x, y, size + thickness, angle, optic, "arc",
                     {"r": size, "t": float(thickness), "span": float(span)}, tint)
    if kind == "microfossil":
        chambers = []
        n = int(rng.integers(4, 7))
        turn = rng.uniform(0.9, 1.3)
        for c in range(n):
            theta = turn * c
            dist = size * (0.15 + 0.7 * c / n)
            chambers.append((dist * math.cos(theta), dist * math.sin(theta), size * (0.22 + 0.2 * c / n)))
        return Grain(kind, x, y, size * 1.35, angle, optic, "chambers", {"chambers": chambers}, tint)
    raise ValueError(f"unknown mineral {kind!r}")


def make_section(sample: dict, config: GeneratorConfig) -> Section:
    """The virtual section of one sample (deterministic in config.seed and the sample's index)."""
    rng = np.random.default_rng([config.seed, 2, sample["index"]])
    recipe = list(RECIPES[sample["class_id"]])
    if sample.get("intermediate"):
        recipe += list(INTERMEDIATE_EXTRA)
    # sample signature: clay hue, grain sizes and cue density vary from sherd to sherd
    size_scale = rng.uniform(0.85, 1.2)
    density_scale = rng.uniform(0.75, 1.3)
    area = (2 * SECTION_HALF) ** 2
    grains: list[Grain] = []
    for kind, density, (lo, hi) in recipe:
        scale = density_scale if kind in CUE_KINDS else rng.uniform(0.7, 1.3)
        count = rng.poisson(density * config.density * scale * area)
        for _ in range(count):
            x, y = rng.uniform(-SECTION_HALF, SECTION_HALF, 2)
            grains.append(make_grain(kind, float(x), float(y), float(rng.uniform(lo, hi) * size_scale), rng))
    hue = rng.normal(0, 0.03, 3)
    matrix = np.clip(np.array([0.55, 0.42, 0.29]) + hue + rng.normal(0, 0.03), 0.2, 0.8)
    n_waves = 6
    k = rng.uniform(0.6, 3.5, n_waves)
    phi = rng.uniform(0, 2 * np.pi, n_waves)
    waves = np.stack([k * np.cos(phi), k * np.sin(phi), rng.uniform(0, 2 * np.pi, n_waves),
                      rng.uniform(0.3, 1.0, n_waves) / n_waves], axis=1)
    cells = int(round(2 * SECTION_HALF / SPECKLE_STEP))
    return Section(sample["sample_id"], sample["class_id"], grains, matrix, waves,
                   rng.random((cells, cells), dtype=np.float32), rng.random((cells, cells), dtype=np.float32),
                   int(rng.integers(0, 2**31 - 1)))


def field_views(config: GeneratorConfig) -> dict[tuple[str, int], View]:
    """The fields photographed per sample: (magnification, k) -> view; 2.5X fields contain the 10X ones."""
    views = {}
    for k in range(config.images_per_view):
        offset = 0.55 * (1 if k % 2 == 0 else -1) * (1 + k // 2 * 0.5)
        views[("10X", k)] = View((offset, 0.3 * (k // 2)), 1.0)
        views[("2.5X", k)] = View((0.0, 0.2 * (1 if k % 2 == 0 else -1)), config.zoom)
    return views


# ------------------------------------------------------------------------------------ rendering

def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def pixel_coordinates(view: View, size: int) -> np.ndarray:
    """(H, W, 2) section coordinates of the pixel centres. Image axes: u to the right, v down.

    A specimen point p appears at image position R(rot) (p - centre) / width, so
    p = centre + width * R(-rot) (u, v)."""
    u = (np.arange(size) + 0.5) / size - 0.5
    uu, vv = np.meshgrid(u, u)
    grid = np.stack([uu, vv], axis=-1) * view.width
    return grid @ _rotation(-view.rotation_deg).T + np.asarray(view.centre)


def _local(points: np.ndarray, grain: Grain) -> tuple[np.ndarray, np.ndarray]:
    """Pixel section coordinates -> the grain's own frame (rotated by -grain.angle)."""
    dx, dy = points[..., 0] - grain.x, points[..., 1] - grain.y
    c, s = math.cos(grain.angle), math.sin(grain.angle)
    return c * dx + s * dy, -s * dx + c * dy


def _inside(grain: Grain, local: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean inside-mask and a shape-specific auxiliary field (core/rim/lath/arc angle)."""
    u, v = local
    p = grain.params
    if grain.shape == "rhomb":
        t = v / math.sin(p["acute"])
        s = u - t * math.cos(p["acute"])
        inside = (np.abs(s) <= p["a"] / 2) & (np.abs(t) <= p["b"] / 2)
        if grain.kind == "calcite":  # rhombohedral cleavage: thin dark lines parallel to one side
            cleavage = np.mod(s / (p["a"] / 3.5), 1.0) < 0.22
            return inside, cleavage.astype(np.float32)
        core = (np.abs(s) <= p["a"] / 4) & (np.abs(t) <= p["b"] / 4)  # dolomite: cloudy core
        return inside, core.astype(np.float32)
    if grain.shape == "poly":
        r = np.hypot(u, v / p["aspect"])
        phi = np.mod(np.arctan2(v / p["aspect"], u), 2 * np.pi)
        inside = r <= np.interp(phi, p["angles"], p["radii"]) * grain.radius
        aux = np.zeros(u.shape, np.float32)
        for lx, ly, la, length, width in p.get("laths", ()):
            c, s = math.cos(la), math.sin(la)
            du, dv = u - lx, v - ly
            a, b = c * du + s * dv, -s * du + c * dv
            lath = (np.abs(a) <= length / 2) & (np.abs(b) <= width / 2)
            aux = np.where(lath, 1.0 + la / np.pi, aux)  # > 0 marks a lath and encodes its angle
        return inside, aux
    if grain.shape == "ellipse":
        return (u / p["a"]) ** 2 + (v / p["b"]) ** 2 <= 1.0, np.zeros(u.shape, np.float32)
    if grain.shape == "arc":
        r = np.hypot(u, v)
        phi = np.arctan2(u, v)  # 0 along +v
        inside = (np.abs(r - p["r"]) <= p["t"] / 2) & (np.abs(phi) <= p["span"] / 2)
        return inside, phi.astype(np.float32)
    if grain.shape == "chambers":
        inside = np.zeros(u.shape, bool)
        rim = np.zeros(u.shape, np.float32)
        for cx, cy, cr in p["chambers"]:
            d = np.hypot(u - cx, v - cy)
            here = d <= cr
            inside |= here
            rim = np.where(here & (d >= 0.6 * cr), 1.0, np.where(here, 0.0, rim))
        return inside, rim
    raise ValueError(grain.shape)


def _sample_field(field_: np.ndarray, points: np.ndarray) -> np.ndarray:
    idx = np.clip(((points + SECTION_HALF) / SPECKLE_STEP).astype(np.int64), 0, field_.shape[0] - 1)
    return field_[idx[..., 1], idx[..., 0]]


def _colour(grain: Grain, aux: np.ndarray, speckle: np.ndarray, speckle2: np.ndarray, rotation: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PPL colours, XPL colours (n, 3) and XPL brightness (n,) of a grain's pixels."""
    n = aux.shape[0]
    tint = np.asarray(grain.tint)
    bright = math.sin(2 * (grain.optic + rotation)) ** 2
    ones = np.ones((n, 1))
    kind = grain.kind
    if kind == "calcite":
        cleavage = aux[:, None]
        ppl = (np.array([0.87, 0.85, 0.80]) + tint * 0.5 + 0.03 * (speckle[:, None] - 0.5)) * (1 - 0.3 * cleavage)
        xpl = CALCITE_XPL[grain.params["colour"]] * (0.08 + 0.9 * bright) * (1 - 0.3 * cleavage)
        level = np.full(n, bright)
    elif kind == "dolomite":
        core = aux[:, None]
        ppl = np.array([0.80, 0.76, 0.69]) * (1 - core) + np.array([0.60, 0.55, 0.48]) * core + tint * 0.5
        xpl = DOLOMITE_XPL[grain.params["colour"]] * (0.08 + 0.85 * bright) * (1 - 0.25 * core)
        level = np.full(n, bright)
    elif kind in ("quartz", "quartz_speck"):
        ppl = np.array([0.93, 0.93, 0.92]) + tint * 0.3 + 0.02 * (speckle[:, None] - 0.5)
        xpl = np.array([0.90, 0.90, 0.93]) * (0.03 + 0.92 * bright) * ones
        level = np.full(n, bright)
    elif kind == "calcareous":
        ppl = np.array([0.64, 0.57, 0.47]) + tint + 0.12 * (speckle[:, None] - 0.5)
        xpl = np.array([0.42, 0.34, 0.25]) * (0.75 + 0.5 * speckle[:, None])
        level = 0.4 + 0.2 * speckle
    elif kind == "microfossil":
        rim = aux[:, None]
        ppl = np.array([0.32, 0.23, 0.15]) * rim + np.array([0.86, 0.83, 0.75]) * (1 - rim) + tint * 0.5
        xpl = np.array([0.14, 0.10, 0.07]) * rim + np.array([0.82, 0.80, 0.74]) * (0.2 + 0.7 * bright) * (1 - rim)
        level = np.full(n, bright)
    elif kind == "siliceous":
        ppl = np.array([0.80, 0.79, 0.75]) + tint * 0.5 + 0.08 * (speckle[:, None] - 0.5)
        xpl = np.array([0.85, 0.85, 0.88]) * (0.1 + 0.55 * speckle2[:, None])
        level = 0.1 + 0.55 * speckle2
    elif kind == "iron_oxide":
        ppl = np.array([0.42, 0.10, 0.05]) + tint * 0.3 + 0.04 * (speckle[:, None] - 0.5)
        xpl = np.array([0.17, 0.03, 0.02]) * ones
        level = np.zeros(n)
    elif kind == "shell":
        fibre = aux  # the angle along the arc: fibres radiate, so the extinction band sweeps along it
        local = np.sin(2 * (grain.optic + grain.angle + fibre + rotation)) ** 2
        ppl = np.array([0.83, 0.79, 0.70]) + tint * 0.5 + 0.03 * np.sin(40 * fibre)[:, None]
        xpl = np.array([0.86, 0.80, 0.70]) * (0.12 + 0.8 * local[:, None])
        level = local
    elif kind == "basalt":
        lath = (aux > 0)[:, None]
        lath_bright = np.sin(2 * ((aux - 1.0) * np.pi + grain.angle + rotation)) ** 2
        ppl = np.where(lath, np.array([0.85, 0.85, 0.82]), np.array([0.23, 0.21, 0.20]) + tint * 0.5)
        xpl = np.where(lath, np.array([0.75, 0.75, 0.78]) * (0.05 + 0.8 * lath_bright[:, None]),
                       np.array([0.06, 0.06, 0.07]) * ones)
        level = np.where(lath[:, 0], lath_bright, 0.0)
    else:
        raise ValueError(kind)
    return ppl, xpl, level


def render(section: Section, view: View, size: int, noise: float = 0.02) -> dict[str, np.ndarray]:
    """PPL and XPL images (H, W, 3 floats in [0, 1]) of one field, with the mineral code,
    grain instance and XPL brightness of every pixel."""
    points = pixel_coordinates(view, size)
    speckle = _sample_field(section.speckle, points)
    speckle2 = _sample_field(section.speckle2, points)
    low = np.zeros((size, size))
    for kx, ky, phase, amp in section.waves:
        low += amp * np.cos(kx * points[..., 0] + ky * points[..., 1] + phase)
    ppl = section.matrix_ppl * (1 + 0.25 * low[..., None]) + 0.05 * (speckle[..., None] - 0.5)
    xpl = np.array([0.07, 0.05, 0.04]) * (1 + 0.4 * low[..., None]) + \
        0.10 * np.clip(speckle - 0.9, 0, None)[..., None] * 10 * np.array([0.8, 0.7, 0.5])
    code = np.zeros((size, size), np.uint8)
    instance = np.zeros((size, size), np.uint16)
    level = np.zeros((size, size), np.float32)
    rot = np.deg2rad(view.rotation_deg)
    scale = size / view.width
    if not section.grains:
        visible = []
    else:
        centres = np.array([[g.x, g.y] for g in section.grains])
        radii = np.array([g.radius for g in section.grains]) * scale + 1
        pos = ((centres - np.asarray(view.centre)) @ _rotation(view.rotation_deg).T / view.width + 0.5) * size
        near = np.flatnonzero((pos[:, 0] + radii >= 0) & (pos[:, 0] - radii < size) &
                              (pos[:, 1] + radii >= 0) & (pos[:, 1] - radii < size))
        visible = [(int(n), pos[n], radii[n]) for n in near]
    for number, (col, row), r in visible:
        grain = section.grains[number]
        number += 1
        true_radius = grain.radius * scale
        if true_radius < SUBPIXEL_RADIUS:  # a grain smaller than a pixel: blended by its area share
            y, x = int(row), int(col)
            if not (0 <= y < size and 0 <= x < size):
                continue
            alpha = min(1.0, math.pi * (0.6 * true_radius) ** 2)
            p, xp, lv = _colour(grain, np.zeros(1, np.float32), speckle[y, x][None], speckle2[y, x][None], rot)
            ppl[y, x] = (1 - alpha) * ppl[y, x] + alpha * p[0]
            xpl[y, x] = (1 - alpha) * xpl[y, x] + alpha * xp[0]
            if alpha >= 0.5:
                code[y, x], instance[y, x], level[y, x] = CODE[grain.kind], number, lv[0]
            continue
        c0, c1 = max(int(col - r), 0), min(int(col + r) + 2, size)
        r0, r1 = max(int(row - r), 0), min(int(row + r) + 2, size)
        if c0 >= c1 or r0 >= r1:
            continue
        local = _local(points[r0:r1, c0:c1], grain)
        inside, aux = _inside(grain, local)
        if not inside.any():
            continue
        ys, xs = np.nonzero(inside)
        ys, xs = ys + r0, xs + c0
        p, x, lv = _colour(grain, aux[inside], speckle[ys, xs], speckle2[ys, xs], rot)
        ppl[ys, xs] = p
        xpl[ys, xs] = x
        code[ys, xs] = CODE[grain.kind]
        instance[ys, xs] = number
        level[ys, xs] = lv
    rng = np.random.default_rng([section.noise_seed, int(view.rotation_deg * 10) % 3600,
                                 int(view.width * 100), int((view.centre[0] + 10) * 100), int((view.centre[1] + 10) * 100)])
    ppl = np.clip(ppl + rng.normal(0, noise, ppl.shape), 0, 1)
    xpl = np.clip(xpl + rng.normal(0, noise, xpl.shape), 0, 1)
    return {"PPL": ppl.astype(np.float32), "XPL": xpl.astype(np.float32), "code": code, "instance": instance,
            "brightness": level}


def encode_mask(view: dict[str, np.ndarray]) -> np.ndarray:
    """(H, W, 3) uint8: R mineral code, G instance mod 256, B XPL brightness x 255."""
    return np.stack([view["code"], (view["instance"] % 256).astype(np.uint8),
                     np.round(np.clip(view["brightness"], 0, 1) * 255).astype(np.uint8)], axis=-1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ the writer

def filename(sample_id: str, polarisation: str, magnification: str, k: int) -> str:
    return f"{sample_id}__{polarisation}__{magnification}__{k}.png"


def write_dataset(root: str | Path, config: GeneratorConfig) -> Path:
    """Write the layout of spec C.5 under `root`: `<class_id>/<file>.png` (RGB),
    `_masks/<class_id>/<file>.png` and `metadata.csv` (one row per image)."""
    import pandas as pd
    from PIL import Image

    root = Path(root)
    rows = []
    views = field_views(config)
    for sample in sample_table(config):
        section = make_section(sample, config)
        cls = sample["class_id"]
        (root / str(cls)).mkdir(parents=True, exist_ok=True)
        (root / "_masks" / str(cls)).mkdir(parents=True, exist_ok=True)
        shots = [(mag, k, views[(mag, k)]) for mag in MAGNIFICATIONS for k in range(config.images_per_view)]
        rotating = (cls in config.rotation_classes and
                    sum(1 for r in rows if r["class_id"] == cls and r["k"] == 0 and r["polarisation"] == "PPL"
                        and r["magnification"] == "10X") < config.rotation_samples)
        if rotating:  # a stage-rotation series of the first 10X field (extra images, k after the others)
            base = views[("10X", 0)]
            for i, angle in enumerate(config.rotation_angles):
                shots.append(("10X", config.images_per_view + i, View(base.centre, base.width, float(angle))))
        for mag, k, view in shots:
            rendered = render(section, view, config.image_size, config.noise)
            mask = Image.fromarray(encode_mask(rendered))
            for pol in POLARISATIONS:
                name = filename(sample["sample_id"], pol, mag, k)
                Image.fromarray(to_uint8(rendered[pol])).save(root / str(cls) / name)
                mask.save(root / "_masks" / str(cls) / name)
                rows.append({"file": f"{cls}/{name}", "sample_id": sample["sample_id"], "site": sample["site"],
                             "class_id": cls, "fabric": FABRICS[cls], "polarisation": pol, "magnification": mag,
                             "k": k, "rotation_deg": view.rotation_deg, "intermediate": sample["intermediate"]})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    (root / "generator.json").write_text(json.dumps(asdict(config), indent=2, default=list) + "\n")
    return root


def materialize(config: GeneratorConfig, cache_dir: str | Path) -> Path:
    """`<cache_dir>/thinsection_synth_<hash>`: written once (atomically), reused afterwards."""
    target = Path(cache_dir) / f"thinsection_synth_{config.digest()}"
    if (target / "metadata.csv").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    staging.chmod(0o755)
    try:
        write_dataset(staging, config)
        os.replace(staging, target)
    except OSError:
        if not (target / "metadata.csv").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def config_from(values: dict | None) -> GeneratorConfig:
    values = dict(values or {})
    for key in ("rotation_classes", "rotation_angles"):
        if key in values:
            values[key] = tuple(values[key])
    return GeneratorConfig(**values)


def sections(config: GeneratorConfig, sample_ids: Iterable[str] | None = None) -> dict[str, Section]:
    """Regenerate the virtual sections (for on-the-fly views such as rotation series)."""
    wanted = None if sample_ids is None else set(sample_ids)
    return {s["sample_id"]: make_section(s, config) for s in sample_table(config)
            if wanted is None or s["sample_id"] in wanted}
