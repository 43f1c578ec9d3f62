"""Procedural synthetic scenes with exact geometry, for tests, the benchmark and the examples.

A :class:`Scene` is a closed, axis-aligned room (floor, ceiling, four walls) holding a few
axis-aligned boxes and spheres at several depths. Rendering is an analytic ray cast (planes, slabs,
quadrics), vectorised over all pixels, so depth is exact and every view of the scene agrees with
every other: textures are functions of the 3D surface point (tiles, checkers, stripes and value
noise), shading is Lambertian under a fixed light (view-independent).

World frame: OpenCV-like, **y points down** (the floor is at larger y than the ceiling), the default
camera sits at the origin with the identity pose and looks along +z into the room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import MirageError
from ..geometry.cameras import Cameras

SCENE_NAMES = ("room",)

_EPS = 1e-6


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lo <= p <= hi`` with a base colour and a texture kind."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float]
    texture: str = "checker"


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]
    texture: str = "stripes"


@dataclass
class Scene:
    """A closed room with boxes and spheres. Build with :func:`make_scene`.

    Attributes:
        name: scene name.
        room_lo / room_hi: ``(3,)`` corners of the room (interior).
        boxes / spheres: the objects.
        seed: texture seed (colours and noise phase; geometry does not depend on it).
        center: a point in the middle of the room, free of objects in a ring of radius ~2.5
            around it (handy for orbits with :func:`~mirage_cli.geometry.cameras.look_at`).
    """

    name: str
    room_lo: tuple[float, float, float]
    room_hi: tuple[float, float, float]
    boxes: list[Box]
    spheres: list[Sphere]
    seed: int = 0
    center: tuple[float, float, float] = (0.0, 0.0, 3.0)
    light: tuple[float, float, float] = (0.35, -0.8, 0.45)  # direction towards the light (y up is -)
    _reference_depth: float | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------------ rendering
    def render(self, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray-cast every camera at ``cameras.height x cameras.width`` (pixel centres at +0.5).

        Returns:
            rgb: ``(N, 3, H, W)`` float32 in [0, 1].
            depth: ``(N, H, W)`` float32 z-depth; positive and finite for any camera inside the
                room (rays that hit nothing, i.e. from a camera outside the room, get 0).
        """
        H, W = cameras.height, cameras.width
        K = cameras.K()
        rgbs, depths = [], []
        v = torch.arange(H, dtype=torch.float64) + 0.5
        u = torch.arange(W, dtype=torch.float64) + 0.5
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        for n in range(len(cameras)):
            k = K[n]
            d_cam = torch.stack(
                [(uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1], torch.ones_like(uu)], dim=-1
            ).reshape(-1, 3)
            R = cameras.c2w[n, :3, :3]
            o = cameras.c2w[n, :3, 3]
            d = d_cam @ R.T  # ray direction whose camera-z component is 1 => hit t is z-depth
            rgb, t = self._shade_rays(o, d)
            rgbs.append(rgb.T.reshape(3, H, W))
            depths.append(t.reshape(H, W))
        return torch.stack(rgbs).float(), torch.stack(depths).float()

    @property
    def reference_depth(self) -> float:
        """Median z-depth of :func:`default_camera` (computed at 208x120, cached)."""
        if self._reference_depth is None:
            _, depth = self.render(default_camera(208, 120))
            self._reference_depth = float(depth.median())
        return self._reference_depth

    # ------------------------------------------------------------------------------ internals
    def _shade_rays(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``o (3,)``, ``d (R, 3)`` -> rgb ``(R, 3)`` float64, t ``(R,)`` (0 = miss)."""
        R = d.shape[0]
        # Room interior: exit distance along each axis.
        lo = torch.tensor(self.room_lo, dtype=torch.float64)
        hi = torch.tensor(self.room_hi, dtype=torch.float64)
        inside = bool(((o > lo) & (o < hi)).all())
        d_safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t_axis = torch.where(d_safe > 0, (hi - o) / d_safe, (lo - o) / d_safe)
        t_best, axis = t_axis.min(dim=1)
        if not inside:
            t_best = torch.full((R,), math.inf, dtype=torch.float64)
        normal = torch.zeros(R, 3, dtype=torch.float64)
        normal.scatter_(1, axis[:, None], -torch.sign(d_safe.gather(1, axis[:, None])))
        obj = axis.clone()  # 0: side walls, 1: floor/ceiling (split below), 2: front/back walls
        ceiling = (axis == 1) & (d_safe[:, 1] < 0)
        obj = torch.where(ceiling, torch.full_like(obj, 3), obj)

        for b, box in enumerate(self.boxes):
            blo = torch.tensor(box.lo, dtype=torch.float64)
            bhi = torch.tensor(box.hi, dtype=torch.float64)
            t1 = (blo - o) / d_safe
            t2 = (bhi - o) / d_safe
            tmin = torch.minimum(t1, t2)
            tmax = torch.maximum(t1, t2)
            tnear, ax = tmin.max(dim=1)
            tfar = tmax.min(dim=1).values
            hit = (tnear <= tfar) & (tnear > _EPS) & (tnear < t_best)
            if hit.any():
                t_best = torch.where(hit, tnear, t_best)
                n = torch.zeros(R, 3, dtype=torch.float64)
                n.scatter_(1, ax[:, None], -torch.sign(d_safe.gather(1, ax[:, None])))
                normal = torch.where(hit[:, None], n, normal)
                obj = torch.where(hit, torch.full_like(obj, 10 + b), obj)

        for s, sph in enumerate(self.spheres):
            c = torch.tensor(sph.center, dtype=torch.float64)
            oc = o - c
            a = (d * d).sum(1)
            bq = 2 * (d @ oc)
            cq = float(oc @ oc) - sph.radius**2
            disc = bq * bq - 4 * a * cq
            t = (-bq - disc.clamp(min=0).sqrt()) / (2 * a)
            hit = (disc >= 0) & (t > _EPS) & (t < t_best)
            if hit.any():
                t_best = torch.where(hit, t, t_best)
                p = o + t[:, None] * d
                n = (p - c) / sph.radius
                normal = torch.where(hit[:, None], n, normal)
                obj = torch.where(hit, torch.full_like(obj, 100 + s), obj)

        miss = ~torch.isfinite(t_best)
        t_best = torch.where(miss, torch.zeros_like(t_best), t_best)
        p = o + t_best[:, None] * d
        rgb = self._texture(p, normal, obj)
        rgb = torch.where(miss[:, None], torch.zeros_like(rgb), rgb)
        return rgb, t_best

    def _texture(self, p: torch.Tensor, n: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """Colour of surface points ``p (R,3)`` with normals ``n`` on objects ``obj (R,)``."""
        g = torch.Generator().manual_seed(self.seed)
        phase = torch.rand(3, generator=g, dtype=torch.float64) * 100
        noise = 0.6 * _value_noise(p * 3.0 + phase) + 0.4 * _value_noise(p * 9.0 + phase * 2)
        rgb = torch.zeros(p.shape[0], 3, dtype=torch.float64)

        def tint(base):
            return torch.tensor(base, dtype=torch.float64)

        palette = torch.rand(8, 3, generator=g, dtype=torch.float64) * 0.5 + 0.3

        # Side walls (x = const): tiles 0.5 x 0.5 with grout, colour jitter per tile.
        m = obj == 0
        if m.any():
            q = p[m][:, [1, 2]] / 0.5
            rgb[m] = _tiles(q, palette[0], palette[1], noise[m])
        # Front/back walls (z = const): large checker + vertical stripes.
        m = obj == 2
        if m.any():
            q = p[m][:, [0, 1]]
            chk = _checker2(q / 0.6)
            stripes = 0.5 + 0.5 * torch.sin(q[:, 0] * 11.0)
            base = torch.where(chk[:, None] > 0, palette[2], palette[3])
            rgb[m] = base * (0.75 + 0.25 * stripes[:, None]) * (0.8 + 0.4 * noise[m][:, None])
        # Floor: wooden planks along z with noise.
        m = obj == 1
        if m.any():
            q = p[m]
            plank = torch.floor(q[:, 0] / 0.4)
            offs = _hash1(plank) * 3.0
            seam = ((q[:, 2] + offs) % 1.5) < 0.04
            grain = 0.5 + 0.5 * torch.sin(q[:, 2] * 25.0 + 4 * noise[m] + plank * 1.3)
            base = tint((0.55, 0.36, 0.2)) * (0.7 + 0.3 * _hash1(plank + 17.0))[:, None]
            col = base * (0.75 + 0.35 * grain[:, None])
            edge = ((q[:, 0] / 0.4) % 1.0) < 0.05
            col = torch.where((seam | edge)[:, None], col * 0.4, col)
            rgb[m] = col
        # Ceiling: fine checker.
        m = obj == 3
        if m.any():
            q = p[m][:, [0, 2]]
            chk = _checker2(q / 0.35)
            rgb[m] = torch.where(chk[:, None] > 0, tint((0.9, 0.9, 0.85)), tint((0.6, 0.62, 0.7))) * (
                0.85 + 0.3 * noise[m][:, None]
            )
        for b, box in enumerate(self.boxes):
            m = obj == 10 + b
            if m.any():
                chk = _checker3(p[m] / 0.2)
                base = tint(box.color)
                col = torch.where(chk[:, None] > 0, base, base * 0.45 + 0.1)
                rgb[m] = col * (0.8 + 0.4 * noise[m][:, None])
        for s, sph in enumerate(self.spheres):
            m = obj == 100 + s
            if m.any():
                q = p[m] - torch.tensor(sph.center, dtype=torch.float64)
                stripes = torch.sin(q[:, 1] / sph.radius * 9.0) > 0
                chk = _checker3(q / (sph.radius * 0.45))
                base = tint(sph.color)
                col = torch.where(stripes[:, None], base, 1.0 - 0.6 * base)
                col = torch.where(chk[:, None] > 0, col, col * 0.7)
                rgb[m] = col * (0.85 + 0.3 * noise[m][:, None])

        light = torch.tensor(self.light, dtype=torch.float64)
        light = light / light.norm()
        lam = (n @ light).clamp(min=0)
        shade = 0.55 + 0.45 * lam
        return (rgb * shade[:, None]).clamp(0, 1)


# ---------------------------------------------------------------------------------- textures
def _hash1(x: torch.Tensor) -> torch.Tensor:
    """Deterministic pseudo-random value in [0, 1) per real input (sin-fract hash)."""
    return torch.frac(torch.sin(x * 12.9898 + 78.233) * 43758.5453).abs()


def _lattice(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor) -> torch.Tensor:
    return torch.frac(torch.sin(ix * 127.1 + iy * 311.7 + iz * 74.7) * 43758.5453).abs()


def _value_noise(p: torch.Tensor) -> torch.Tensor:
    """Smooth trilinear value noise in [0, 1] of 3D points ``(R, 3)``."""
    f = torch.floor(p)
    t = p - f
    t = t * t * (3 - 2 * t)
    out = torch.zeros(p.shape[0], dtype=p.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1]) * (t[:, 2] if dz else 1 - t[:, 2])
                out = out + w * _lattice(f[:, 0] + dx, f[:, 1] + dy, f[:, 2] + dz)
    return out


def _checker2(q: torch.Tensor) -> torch.Tensor:
    return (torch.floor(q[:, 0]) + torch.floor(q[:, 1])) % 2


def _checker3(q: torch.Tensor) -> torch.Tensor:
    return (torch.floor(q[:, 0]) + torch.floor(q[:, 1]) + torch.floor(q[:, 2])) % 2


def _tiles(q: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    cell = torch.floor(q)
    fr = q - cell
    grout = (fr < 0.06).any(dim=1)
    r = _lattice(cell[:, 0], cell[:, 1], torch.zeros_like(cell[:, 0]))
    col = c0 * (1 - r[:, None]) + c1 * r[:, None]
    col = col * (0.8 + 0.4 * noise[:, None])
    return torch.where(grout[:, None], torch.full_like(col, 0.15), col)


# ---------------------------------------------------------------------------------- factory
def make_scene(name: str = "room", seed: int = 0) -> Scene:
    """Build a named procedural scene. ``seed`` changes colours and noise, not geometry.

    ``room``: interior x in [-4, 4], y in [-2.4, 1.4] (ceiling at -2.4, floor at +1.4: y is down),
    z in [-3, 9]; boxes and spheres between z = 2 and z = 7.5. The default camera at the origin
    looks along +z; :attr:`Scene.center` = (0, 0, 3) has an object-free ring of radius 2.5 around it.
    """
    if name not in SCENE_NAMES:
        raise MirageError(f"unknown scene {name!r} (known: {', '.join(SCENE_NAMES)})")
    g = torch.Generator().manual_seed(seed)
    cols = (torch.rand(8, 3, generator=g) * 0.6 + 0.3).tolist()
    floor = 1.4
    boxes = [
        Box((-1.1, floor - 0.9, 2.8), (-0.2, floor, 3.7), tuple(cols[0])),          # near-centre crate
        Box((2.2, floor - 2.2, 6.0), (3.4, floor, 7.4), tuple(cols[1])),            # tall box, far right
        Box((-3.6, floor - 0.7, 0.2), (-2.8, floor, 1.2), tuple(cols[2])),          # low box, near left
        Box((0.6, -1.6, 7.6), (1.8, -0.4, 8.99), tuple(cols[3])),                   # shelf on the back wall
    ]
    spheres = [
        Sphere((0.65, floor - 0.5, 2.5), 0.5, tuple(cols[4])),                     # on the floor, near
        Sphere((-2.5, -0.3, 6.6), 0.75, tuple(cols[5])),                            # floating, far left
        Sphere((0.3, -0.9, 3.6), 0.3, tuple(cols[6])),                              # small, floating above centre
    ]
    return Scene(name=name, room_lo=(-4.0, -2.4, -3.0), room_hi=(4.0, floor, 9.0), boxes=boxes,
                 spheres=spheres, seed=seed)


def default_camera(width: int = 832, height: int = 480, fov: float = 55.0) -> Cameras:
    """The view the example image is rendered from: identity pose, vertical fov ``fov`` degrees."""
    return Cameras.from_fov(torch.eye(4, dtype=torch.float64), fov, width, height)
