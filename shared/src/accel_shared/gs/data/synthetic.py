"""Procedural multi-view scenes with exact depth, ray cast on the CPU with torch.

A scene is a closed box room (textured walls, floor and ceiling) seen from inside, with 2–5 textured
objects (spheres, boxes, capped cylinders) standing on the floor or floating at different depths in front
of the back wall, so the depth maps have real discontinuities. Cameras follow a short, smooth,
RealEstate10K-like forward-facing trajectory (mostly sideways, partly forward) looking at the scene
centre, with small jitter; frames are ordered along the trajectory, so index distance grows with the
baseline. Shading is Lambertian with one fixed directional light plus ambient and no shadows or
highlights: a surface point has the same colour in every view, which a Gaussian with a plain RGB colour
can fit.

Conventions are those of :mod:`accel_shared.gs.cameras`: camera-to-world OpenCV extrinsics, normalised
intrinsics (one ``fx = fy`` in pixels, principal point at the image centre, square pixels), z-depth. The
world frame is the OpenCV frame of a camera at the origin looking at the back wall: x right, **y down**
(the floor is at positive y), z towards the back wall.

A scene is a pure function of ``(seed, index)``: the layout (room, objects, textures, trajectory,
field of view) comes from one random stream and the per-view jitter from another, so the geometry of a
scene does not depend on ``views_per_scene`` (more views sample the same trajectory more densely).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GENERATOR_VERSION", "check_image_size", "depth_boundaries", "make_scene"]

GENERATOR_VERSION = 1  # bump whenever the scenes a (seed, index) gives change

_LIGHT = np.array([-0.35, -0.8, -0.5]) / np.linalg.norm([-0.35, -0.8, -0.5])  # towards the light
_AMBIENT = 0.4
_EPS = 1e-6
_RAYS_PER_CHUNK = 1 << 17  # rays cast at once; bounds memory at high resolution / many views


@dataclass
class _Texture:
    """A solid (3D) texture evaluated at object-local points; ``kind`` is checker, stripes or noise."""

    kind: str
    colors: np.ndarray  # [3, 3] palette, RGB in [0, 1]
    scale: float  # checker cell size / stripe period (world units)
    offset: np.ndarray  # [3] phase of the checker grid (keeps cell edges off the room's planes)
    frequencies: np.ndarray  # [K, 3] wave vectors for stripes (K = 1) and noise
    phases: np.ndarray  # [K]
    modulation: np.ndarray  # [4, 3] wave vectors of a low-frequency brightness modulation


@dataclass
class _Object:
    kind: str  # sphere | box | cylinder
    center: np.ndarray  # [3]
    rotation: np.ndarray  # [3, 3] local-to-world
    size: np.ndarray  # sphere: (r, r, r); box: half extents; cylinder: (r, half height, r), axis = local y
    texture: _Texture


@dataclass
class _Layout:
    room_low: np.ndarray  # [3] room corners
    room_high: np.ndarray
    faces: list[_Texture]  # 6 textures: -x, +x, -y (ceiling), +y (floor), -z (front), +z (back)
    objects: list[_Object]
    path: np.ndarray  # [3, 3] quadratic Bézier control points of the camera centres
    target: np.ndarray  # [3] look-at point
    fov_x_degrees: float


def check_image_size(
    image_size: int | tuple[int, int] | list[int], name: str = "image_size"
) -> tuple[int, int]:
    """``int`` or ``(H, W)`` of positive ints -> ``(H, W)``; TypeError / ValueError naming ``name``."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        raise TypeError(f"{name} must be an int or a pair (H, W) of ints, got {image_size!r}")
    if min(image_size) < 1:
        raise ValueError(f"{name} must be positive, got {tuple(image_size)}")
    return int(image_size[0]), int(image_size[1])


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------------------------- layout


def _palette(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform()
    colors = []
    for k in range(3):
        h = (hue + k * rng.uniform(0.08, 0.45)) % 1.0
        s = rng.uniform(0.35, 0.9)
        v = rng.uniform(0.25, 0.5) if k == 0 else rng.uniform(0.6, 1.0)  # dark vs light: contrast
        colors.append(colorsys.hsv_to_rgb(h, s, v))
    return np.array(colors)


def _texture(rng: np.random.Generator, kind: str | None = None) -> _Texture:
    kind = kind or str(rng.choice(["checker", "stripes", "noise"]))
    count = 1 if kind == "stripes" else 6
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    scale = rng.uniform(0.25, 0.6)
    magnitudes = 2 * np.pi / scale if kind == "stripes" else rng.uniform(2.0, 9.0, size=(count, 1))
    modulation = rng.normal(size=(4, 3)) * 1.5
    return _Texture(
        kind=kind,
        colors=_palette(rng),
        scale=scale,
        offset=rng.uniform(0, scale, size=3),
        frequencies=directions * magnitudes,
        phases=rng.uniform(0, 2 * np.pi, size=count),
        modulation=modulation,
    )


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _yaw(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _sample_layout(rng: np.random.Generator) -> _Layout:
    half_width = rng.uniform(2.5, 4.0)
    floor, ceiling = rng.uniform(1.2, 1.8), -rng.uniform(1.6, 2.6)
    back = rng.uniform(6.0, 9.5)
    low, high = np.array([-half_width, ceiling, -3.0]), np.array([half_width, floor, back])
    faces = [_texture(rng) for _ in range(6)]
    faces[3] = _texture(rng, "checker")  # a checkered floor, as in most synthetic benchmarks
    fov_x = rng.uniform(50.0, 60.0)
    tan_half = math.tan(math.radians(fov_x) / 2)

    objects = []
    for _ in range(int(rng.integers(2, 6))):
        kind = str(rng.choice(["sphere", "box", "cylinder"]))
        extent = rng.uniform(0.3, 0.8)
        depth = rng.uniform(1.9 + extent, back - 1.0 - extent)
        x = rng.uniform(-0.75, 0.75) * depth * tan_half
        x = float(np.clip(x, low[0] + extent + 0.1, high[0] - extent - 0.1))
        on_floor = rng.uniform() < 0.5
        if kind == "sphere":
            size = np.full(3, extent)
            rotation = _random_rotation(rng)  # orients the texture only
        elif kind == "box":
            size = extent * rng.uniform(0.6, 1.0, size=3)
            rotation = _yaw(rng.uniform(0, np.pi)) if on_floor else _random_rotation(rng)
        else:
            size = np.array([extent * rng.uniform(0.5, 0.8), extent, 0.0])
            size[2] = size[0]
            rotation = _yaw(rng.uniform(0, np.pi)) if on_floor else _random_rotation(rng)
        if on_floor:  # resting on the floor: the lowest point of the (yaw-only) object touches it
            y = floor - size[1] - 1e-3
        else:
            y = rng.uniform(-0.5, 0.4) * depth * tan_half
            y = float(np.clip(y, ceiling + extent + 0.2, floor - extent - 0.2))
        center = np.array([x, y, depth])
        objects.append(_Object(kind, center, rotation, size, _texture(rng)))

    baseline = rng.uniform(0.5, 1.2)
    heading = rng.uniform(-np.radians(35), np.radians(35)) + (np.pi if rng.uniform() < 0.5 else 0.0)
    direction = np.array([math.cos(heading), rng.uniform(-0.05, 0.05), math.sin(heading)])
    start = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15), rng.uniform(-0.2, 0.2)])
    start -= direction * baseline / 2
    end = start + direction * baseline
    middle = (start + end) / 2 + np.array([0.0, 0.0, rng.uniform(-0.15, 0.15) * baseline])
    target = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.3), rng.uniform(0.45, 0.65) * back])
    return _Layout(low, high, faces, objects, np.stack([start, middle, end]), target, fov_x)


def _look_at(position: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """Camera-to-world [4, 4] of an OpenCV camera at ``position`` looking at ``target`` (world y down)."""
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(np.array([0.0, 1.0, 0.0]), forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, position
    return c2w


def _sample_cameras(
    layout: _Layout, rng: np.random.Generator, views: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Extrinsics [V, 4, 4] (ordered along the path) and normalised intrinsics [V, 3, 3]."""
    s = np.linspace(0.0, 1.0, views)[:, None]
    p0, p1, p2 = layout.path
    centers = (1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s**2 * p2
    baseline = float(np.linalg.norm(p2 - p0))
    centers = centers + rng.normal(scale=0.01 * baseline, size=centers.shape)
    targets = layout.target + rng.normal(scale=0.03, size=(views, 3))
    rolls = rng.normal(scale=math.radians(1.0), size=views)
    extrinsics = np.stack([_look_at(c, t, r) for c, t, r in zip(centers, targets, rolls, strict=True)])
    fx = 0.5 / math.tan(math.radians(layout.fov_x_degrees) / 2)  # normalised by W
    intrinsics = np.array([[fx, 0.0, 0.5], [0.0, fx * width / height, 0.5], [0.0, 0.0, 1.0]])
    return extrinsics, np.broadcast_to(intrinsics, (views, 3, 3)).copy()


# ----------------------------------------------------------------------------------------- ray casting


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float64)


def _intersect_room(layout: _Layout, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Exit distance of rays starting inside the room: t [N], face id [N] in 0..5, normal [N, 3]."""
    low, high = _t(layout.room_low), _t(layout.room_high)
    bound = torch.where(d > 0, high, low)
    safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t_axis = torch.where(d.abs() < 1e-12, torch.full_like(d, math.inf), (bound - o) / safe)
    t, axis = t_axis.min(dim=-1)
    positive = torch.gather(d, 1, axis[:, None])[:, 0] > 0
    face = 2 * axis + positive.long()
    normal = torch.zeros_like(d)
    normal.scatter_(1, axis[:, None], torch.where(positive, -1.0, 1.0).to(d.dtype)[:, None])
    return t, face, normal


def _intersect_object(obj: _Object, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit in front of the ray (inf if none) [N] and the local-frame normal there [N, 3]."""
    rotation = _t(obj.rotation)
    ol = (o - _t(obj.center)) @ rotation  # world -> local: R^T (o - c), as row vectors
    dl = d @ rotation
    inf = torch.full_like(ol[:, 0], math.inf)
    if obj.kind == "sphere":
        r = float(obj.size[0])
        a, b, c = (dl * dl).sum(-1), (ol * dl).sum(-1), (ol * ol).sum(-1) - r * r
        disc = b * b - a * c
        t = (-b - disc.clamp_min(0).sqrt()) / a
        t = torch.where((disc >= 0) & (t > _EPS), t, inf)
        return t, (ol + t[:, None] * dl) / r
    if obj.kind == "box":
        half = _t(obj.size)
        safe = torch.where(dl.abs() < 1e-12, torch.full_like(dl, 1e-12), dl)
        t1, t2 = (-half - ol) / safe, (half - ol) / safe
        t_near, axis = torch.minimum(t1, t2).max(dim=-1)
        t_far = torch.maximum(t1, t2).min(dim=-1).values
        t = torch.where((t_near <= t_far) & (t_near > _EPS), t_near, inf)
        sign = -torch.sign(torch.gather(dl, 1, axis[:, None]))
        normal = torch.zeros_like(dl).scatter_(1, axis[:, None], sign)
        return t, normal
    radius, half_height = float(obj.size[0]), float(obj.size[1])  # cylinder along local y
    a = dl[:, 0] ** 2 + dl[:, 2] ** 2
    b = ol[:, 0] * dl[:, 0] + ol[:, 2] * dl[:, 2]
    c = ol[:, 0] ** 2 + ol[:, 2] ** 2 - radius**2
    disc = b * b - a * c
    t_side = (-b - disc.clamp_min(0).sqrt()) / a.clamp_min(1e-12)
    y_side = ol[:, 1] + t_side * dl[:, 1]
    t_side = torch.where(
        (disc >= 0) & (a > 1e-12) & (y_side.abs() <= half_height) & (t_side > _EPS), t_side, inf
    )
    safe_y = torch.where(dl[:, 1].abs() < 1e-12, torch.full_like(a, 1e-12), dl[:, 1])
    t_caps = []
    for cap in (-half_height, half_height):
        tc = (cap - ol[:, 1]) / safe_y
        px, pz = ol[:, 0] + tc * dl[:, 0], ol[:, 2] + tc * dl[:, 2]
        t_caps.append(torch.where((px * px + pz * pz <= radius**2) & (tc > _EPS), tc, inf))
    t_cap = torch.minimum(*t_caps)
    t = torch.minimum(t_side, t_cap)
    point = ol + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None] * dl
    side_normal = torch.stack([point[:, 0], torch.zeros_like(a), point[:, 2]], -1) / radius
    cap_normal = torch.zeros_like(point)
    cap_normal[:, 1] = torch.sign(point[:, 1])
    return t, torch.where((t_side <= t_cap)[:, None], side_normal, cap_normal)


def _cast(layout: _Layout, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Nearest surface along each ray: t [N], surface id [N] (0..5 room faces, 6.. objects), world
    normal [N, 3] and the surface-local point [N, 3] its texture is evaluated at."""
    t, surface, normal = _intersect_room(layout, o, d)
    local = o + t[:, None] * d
    for k, obj in enumerate(layout.objects):
        t_obj, normal_local = _intersect_object(obj, o, d)
        closer = t_obj < t
        if not bool(closer.any()):
            continue
        rotation = _t(obj.rotation)
        t = torch.where(closer, t_obj, t)
        surface = torch.where(closer, torch.full_like(surface, 6 + k), surface)
        normal = torch.where(closer[:, None], normal_local @ rotation.T, normal)
        point_local = (o + t_obj.nan_to_num(posinf=0.0)[:, None] * d - _t(obj.center)) @ rotation
        local = torch.where(closer[:, None], point_local, local)
    return t, surface, normal, local


def _albedo(texture: _Texture, points: torch.Tensor) -> torch.Tensor:
    """RGB albedo [M, 3] of ``texture`` at local points [M, 3]."""
    colors = _t(texture.colors)
    if texture.kind == "checker":
        cells = torch.floor((points + _t(texture.offset)) / texture.scale).sum(-1)
        mix = torch.remainder(cells, 2.0)
        rgb = colors[0] + mix[:, None] * (colors[1] - colors[0])
    else:
        waves = torch.sin(points @ _t(texture.frequencies).T + _t(texture.phases))  # [M, K]
        if texture.kind == "stripes":
            mix, second = 0.5 + 0.5 * waves[:, 0], torch.zeros_like(waves[:, 0])
        else:
            half = waves.shape[1] // 2
            mix = 0.5 + 0.5 * waves[:, :half].mean(-1) * 1.6
            second = (0.5 + 0.5 * waves[:, half:].mean(-1) * 1.6).clamp(0, 1) ** 2
        rgb = colors[0] + mix.clamp(0, 1)[:, None] * (colors[1] - colors[0])
        rgb = rgb + second[:, None] * (colors[2] - rgb)
    brightness = 0.85 + 0.15 * torch.sin(points @ _t(texture.modulation).T).mean(-1)
    return rgb * brightness[:, None]


def _shade(layout: _Layout, surface: torch.Tensor, normal: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Lambertian colour [N, 3] in [0, 1] (view-independent: depends on the surface point only)."""
    textures = layout.faces + [obj.texture for obj in layout.objects]
    rgb = torch.zeros_like(local)
    for k, texture in enumerate(textures):
        mask = surface == k
        if bool(mask.any()):
            rgb[mask] = _albedo(texture, local[mask])
    lambert = (normal @ _t(_LIGHT)).clamp_min(0.0)
    return (rgb * (_AMBIENT + (1 - _AMBIENT) * lambert)[:, None]).clamp(0.0, 1.0)


def _rays(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, offsets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and directions [V, S, H, W, 3] for sub-pixel ``offsets`` [S, 2] (x, y in pixels, 0.5 =
    centre). Directions have camera z = 1, so the ray parameter of a hit is its z-depth."""
    j = torch.arange(width, dtype=torch.float64)
    i = torch.arange(height, dtype=torch.float64)
    u = (j[None, None, :] + offsets[:, 0, None, None]) / width  # [S, 1, W]
    v = (i[None, :, None] + offsets[:, 1, None, None]) / height  # [S, H, 1]
    fx, fy = intrinsics[:, 0, 0, None, None, None], intrinsics[:, 1, 1, None, None, None]
    cx, cy = intrinsics[:, 0, 2, None, None, None], intrinsics[:, 1, 2, None, None, None]
    x = ((u - cx) / fx).expand(-1, -1, height, -1)  # [V, S, H, W]
    y = ((v - cy) / fy).expand(-1, -1, -1, width)
    camera = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    directions = camera @ extrinsics[:, None, None, :3, :3].transpose(-1, -2)
    origins = extrinsics[:, None, None, None, :3, 3].expand_as(directions)
    return origins, directions


def _render(
    layout: _Layout,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    height: int,
    width: int,
    antialias: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image [V, 3, H, W], depth [V, H, W], pointmap [V, H, W, 3] (float64)."""
    views = extrinsics.shape[0]
    centre = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    grid = (torch.arange(antialias, dtype=torch.float64) + 0.5) / antialias
    sub = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), dim=-1).reshape(-1, 2)
    per_view = height * width * (1 + antialias * antialias)
    step = max(1, _RAYS_PER_CHUNK // per_view)
    images, depths, points = [], [], []
    for start in range(0, views, step):
        ext, intr = extrinsics[start : start + step], intrinsics[start : start + step]
        o, d = (x.reshape(-1, 3) for x in _rays(ext, intr, height, width, centre))
        t, surface, normal, local = _cast(layout, o, d)
        depths.append(t.reshape(-1, height, width))
        points.append((o + t[:, None] * d).reshape(-1, height, width, 3))
        if antialias > 1:
            o, d = (x.reshape(-1, 3) for x in _rays(ext, intr, height, width, sub))
            _, surface, normal, local = _cast(layout, o, d)
        rgb = _shade(layout, surface, normal, local).reshape(ext.shape[0], -1, height, width, 3).mean(1)
        images.append(rgb.permute(0, 3, 1, 2))
    return torch.cat(images), torch.cat(depths), torch.cat(points)


def make_scene(
    seed: int,
    index: int = 0,
    *,
    views_per_scene: int = 8,
    image_size: int | tuple[int, int] = (64, 64),
    antialias: int = 2,
) -> dict[str, torch.Tensor]:
    """Render scene ``index`` of the family ``seed`` from ``views_per_scene`` ordered views.

    Args:
        seed, index: non-negative ints; the scene is a pure function of the pair.
        views_per_scene: V >= 1 frames along the trajectory.
        image_size: H×W (an int for square images).
        antialias: colour samples per pixel along each axis (depth is always the pixel-centre ray).

    Returns:
        ``image`` [V, 3, H, W] float32 in [0, 1]; ``depth`` [V, H, W] exact z-depth; ``pointmap``
        [V, H, W, 3] world point of each pixel centre (equal to ``cameras.unproject_depth(depth, ...)``);
        ``extrinsics`` [V, 4, 4] camera-to-world; ``intrinsics`` [V, 3, 3] normalised; ``near`` and
        ``far`` [V] (one value per scene, 0.9× the smallest and 1.1× the largest depth of all views).
    """
    _check_int(seed, "seed", 0)
    _check_int(index, "index", 0)
    _check_int(views_per_scene, "views_per_scene", 1)
    _check_int(antialias, "antialias", 1)
    height, width = check_image_size(image_size)
    layout_seq, camera_seq = np.random.SeedSequence([seed, index]).spawn(2)
    layout = _sample_layout(np.random.default_rng(layout_seq))
    extrinsics_np, intrinsics_np = _sample_cameras(
        layout, np.random.default_rng(camera_seq), views_per_scene, height, width
    )
    extrinsics, intrinsics = _t(extrinsics_np), _t(intrinsics_np)
    image, depth, pointmap = _render(layout, extrinsics, intrinsics, height, width, antialias)
    near = torch.full((views_per_scene,), 0.9 * float(depth.min()))
    far = torch.full((views_per_scene,), 1.1 * float(depth.max()))
    return {
        "image": image.float(),
        "depth": depth.float(),
        "pointmap": pointmap.float(),
        "extrinsics": extrinsics.float(),
        "intrinsics": intrinsics.float(),
        "near": near.float(),
        "far": far.float(),
    }


def depth_boundaries(depth: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Pixels next to a depth discontinuity: [..., H, W] bool.

    A pixel is marked when one of its 4-neighbours differs from it by more than ``threshold`` in
    relative depth, ``|d_p - d_q| / min(d_p, d_q)``; both sides of a jump are marked.

    Args:
        depth: [..., H, W] positive, finite z-depth.
        threshold: relative jump > 0 (0.1 = 10 %).
    """
    if not isinstance(depth, torch.Tensor) or depth.ndim < 2 or not depth.is_floating_point():
        raise TypeError("depth_boundaries: depth must be a floating-point tensor [..., H, W]")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"depth_boundaries: threshold must be a positive number, got {threshold!r}")
    if depth.numel() and not bool(((depth > 0) & torch.isfinite(depth)).all()):
        raise ValueError("depth_boundaries: depth must be positive and finite everywhere")
    edges = torch.zeros(depth.shape, dtype=torch.bool, device=depth.device)
    for dim in (-1, -2):
        a, b = depth.narrow(dim, 0, depth.shape[dim] - 1), depth.narrow(dim, 1, depth.shape[dim] - 1)
        jump = (a - b).abs() > threshold * torch.minimum(a, b)
        edges.narrow(dim, 0, depth.shape[dim] - 1).logical_or_(jump)
        edges.narrow(dim, 1, depth.shape[dim] - 1).logical_or_(jump)
    return edges
