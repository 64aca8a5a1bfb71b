"""Procedural scene generator, caption grammar and ground-truth labels.

A scene is one coloured shape ("a red circle") or two shapes in a spatial relation
("a red circle above a blue square") on a neutral background, rendered at 32x32 RGB.
Everything that makes images distinguishable for the evaluator is chosen for
robustness at that resolution under the blur a small diffusion model produces:

- the palette colours sit at well-separated hues (blurring a colour into a neutral
  background keeps its hue), backgrounds are low-chroma so "saturated" means "object";
- five shapes (circle, square, triangle, star, cross) that stay distinguishable after
  blur; they are upright, axis-aligned, at least 5 px in radius, and rendered with 4x4
  supersampling so edges are antialiased like real images (exact point-in-shape tests
  rather than a rasteriser, so coverage is unbiased at sub-pixel positions);
- the two objects of a composition always differ in colour and are separated by a
  gap, so colour segmentation separates them.

Randomness only ever comes from a caller-supplied ``numpy.random.Generator``;
``render`` is a pure function of the ``SceneSpec`` (background noise has its own seed
inside the spec), so a spec *is* the ground-truth label of its image.

Held-out combinations (``HELDOUT_OBJECTS``, ``HELDOUT_PAIRS``) never appear in
images sampled with ``exclude_heldout=True``, which ``sample_training_batch`` uses:
they measure compositional generalisation of models trained on this world.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

IMAGE_SIZE = 32
SUPERSAMPLE = 4

#: Saturated colours at well-separated hues (red ~357, orange ~27, yellow ~56,
#: green ~129, blue ~224, purple ~280 degrees), RGB in 0..255.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 45),
    "orange": (245, 120, 20),
    "yellow": (240, 225, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 225),
    "purple": (150, 50, 200),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
#: Relation of the first object of a composition to the second.
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")

#: Neutral background tones (RGB 0..255); per-scene jitter, gradient and noise are added.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (238, 238, 234),
    "light grey": (195, 195, 195),
    "grey": (128, 128, 130),
    "dark grey": (70, 70, 72),
    "black": (22, 22, 25),
    "beige": (220, 212, 195),
}

#: Object half-extent (px): every shape fits a 2*size box around its centre.
SINGLE_SIZE_RANGE = (6.0, 10.0)
COMPOSITION_SIZE_RANGE = (5.0, 7.0)
#: Minimum distance (px) between an object's box and the image border / the other box.
BORDER_MARGIN = 1.0
OBJECT_GAP = 2.0
#: Compositions keep the off-axis offset below this fraction of the on-axis distance,
#: so the relation is unambiguous (the evaluator accepts up to 45 degrees).
MAX_OFF_AXIS_RATIO = 0.5


class ObjectLabel(NamedTuple):
    """What a caption says about one object; compares equal to a plain (colour, shape) tuple."""

    colour: str
    shape: str

    @property
    def phrase(self) -> str:
        return f"{self.colour} {self.shape}"


#: (colour, shape) pairs never rendered in training data: every shape is held out in
#: exactly one colour (and no colour twice), so each held-out object recombines a seen
#: colour with a seen shape.
HELDOUT_OBJECTS: frozenset[ObjectLabel] = frozenset(
    {
        ObjectLabel("green", "star"),
        ObjectLabel("blue", "triangle"),
        ObjectLabel("yellow", "circle"),
        ObjectLabel("purple", "square"),
        ObjectLabel("orange", "cross"),
    }
)
#: Unordered pairs of (individually seen) objects that never share a training image,
#: in any relation or order.
HELDOUT_PAIRS: frozenset[frozenset[ObjectLabel]] = frozenset(
    {
        frozenset({ObjectLabel("red", "circle"), ObjectLabel("blue", "square")}),
        frozenset({ObjectLabel("yellow", "star"), ObjectLabel("green", "triangle")}),
        frozenset({ObjectLabel("orange", "triangle"), ObjectLabel("purple", "circle")}),
        frozenset({ObjectLabel("blue", "circle"), ObjectLabel("orange", "star")}),
        frozenset({ObjectLabel("green", "cross"), ObjectLabel("red", "square")}),
    }
)


@dataclass(frozen=True)
class SceneLabels:
    """The content of a caption: one object, or two objects and the relation of the first to the second."""

    objects: tuple[ObjectLabel, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(ObjectLabel(*o) for o in self.objects))
        for colour, shape in self.objects:
            if colour not in PALETTE:
                raise ValueError(f"unknown colour {colour!r}; valid: {COLOURS}")
            if shape not in SHAPES:
                raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")
        if len(self.objects) == 1 and self.relation is not None:
            raise ValueError("a single-object scene has no relation")
        if len(self.objects) == 2:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; valid: {RELATIONS}")
            if self.objects[0].colour == self.objects[1].colour:
                raise ValueError("the two objects of a composition must differ in colour")
        if len(self.objects) not in (1, 2):
            raise ValueError(f"a scene has 1 or 2 objects, got {len(self.objects)}")

    @property
    def kind(self) -> str:
        return "single" if len(self.objects) == 1 else "composition"


@dataclass(frozen=True)
class SceneObject:
    """One rendered object: ``centre`` is (x, y) in pixels, the image spanning [0, 32]."""

    colour: str
    shape: str
    size: float
    centre: tuple[float, float]
    shade: float = 1.0  # brightness multiplier of the palette colour (keeps the hue)

    @property
    def label(self) -> ObjectLabel:
        return ObjectLabel(self.colour, self.shape)


@dataclass(frozen=True)
class Background:
    """A neutral background: base RGB in [0, 1], a linear brightness gradient and pixel noise."""

    name: str
    rgb: tuple[float, float, float]
    gradient: tuple[float, float]  # brightness change from image centre to right / bottom edge
    noise_std: float
    noise_seed: int


@dataclass(frozen=True)
class SceneSpec:
    """Full ground truth of one image; ``relation`` relates ``objects[0]`` to ``objects[1]``."""

    objects: tuple[SceneObject, ...]
    background: Background
    relation: str | None = None

    @property
    def labels(self) -> SceneLabels:
        return SceneLabels(tuple(o.label for o in self.objects), self.relation)


def _as_labels(x: SceneSpec | SceneLabels) -> SceneLabels:
    return x.labels if isinstance(x, SceneSpec) else x


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(x: SceneSpec | SceneLabels) -> str:
    """Caption of a scene, e.g. "a red circle" or "an orange star left of a blue square"."""
    labels = _as_labels(x)
    parts = [f"{_article(o.colour)} {o.phrase}" for o in labels.objects]
    return parts[0] if len(parts) == 1 else f"{parts[0]} {labels.relation} {parts[1]}"


def phrases(x: SceneSpec | SceneLabels) -> tuple[str, ...]:
    """Object phrases of the caption ("red circle", ...), each a substring of ``caption(x)``."""
    return tuple(o.phrase for o in _as_labels(x).objects)


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(w) for w in words)


_OBJECT_RE = rf"an? ({_alternation(COLOURS)}) ({_alternation(SHAPES)})"
_CAPTION_RE = re.compile(rf"{_OBJECT_RE}(?: ({_alternation(RELATIONS)}) {_OBJECT_RE})?")


def parse_caption(text: str) -> SceneLabels:
    """Inverse of ``caption``; whitespace and case are normalised, anything else outside
    the grammar "a|an COLOUR SHAPE [RELATION a|an COLOUR SHAPE]" raises ValueError."""
    normalised = " ".join(text.lower().split())
    match = _CAPTION_RE.fullmatch(normalised)
    if match is None:
        raise ValueError(
            f"caption {text!r} is outside the grammar 'a COLOUR SHAPE [RELATION a COLOUR SHAPE]' "
            f"with colours {COLOURS}, shapes {SHAPES}, relations {RELATIONS}"
        )
    c1, s1, relation, c2, s2 = match.groups()
    if relation is None:
        return SceneLabels((ObjectLabel(c1, s1),))
    return SceneLabels((ObjectLabel(c1, s1), ObjectLabel(c2, s2)), relation)


def is_heldout(x: SceneSpec | SceneLabels) -> bool:
    """Whether a scene contains a held-out object or a held-out pair of objects."""
    labels = _as_labels(x)
    return any(o in HELDOUT_OBJECTS for o in labels.objects) or frozenset(labels.objects) in HELDOUT_PAIRS


def sample_labels(rng: np.random.Generator, kind: str = "single", *, exclude_heldout: bool = False) -> SceneLabels:
    """Uniformly random caption content of the given kind ("single" or "composition")."""
    if kind not in ("single", "composition"):
        raise ValueError(f"unknown scene kind {kind!r}; valid: 'single', 'composition'")
    while True:
        first = ObjectLabel(COLOURS[rng.integers(len(COLOURS))], SHAPES[rng.integers(len(SHAPES))])
        if kind == "single":
            labels = SceneLabels((first,))
        else:
            other_colours = [c for c in COLOURS if c != first.colour]
            second = ObjectLabel(other_colours[rng.integers(len(other_colours))], SHAPES[rng.integers(len(SHAPES))])
            labels = SceneLabels((first, second), RELATIONS[rng.integers(len(RELATIONS))])
        if not (exclude_heldout and is_heldout(labels)):
            return labels


def _sample_background(rng: np.random.Generator) -> Background:
    name = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    base = np.array(BACKGROUNDS[name], dtype=np.float64) / 255.0
    rgb = np.clip(base + rng.uniform(-0.03, 0.03) + rng.uniform(-0.01, 0.01, size=3), 0.0, 1.0)
    gradient = tuple(float(g) for g in rng.uniform(-0.05, 0.05, size=2)) if rng.random() < 0.5 else (0.0, 0.0)
    noise_std = float(rng.uniform(0.005, 0.02)) if rng.random() < 0.5 else 0.0
    return Background(name, tuple(float(v) for v in rgb), gradient, noise_std, int(rng.integers(2**31)))


def _sample_object(
    rng: np.random.Generator, label: ObjectLabel, size: float, centre: tuple[float, float]
) -> SceneObject:
    return SceneObject(label.colour, label.shape, size, centre, float(rng.uniform(0.85, 1.0)))


def _place_pair(
    rng: np.random.Generator, size_a: float, size_b: float, relation: str
) -> tuple[tuple[float, float], ...]:
    """Centres of A and B such that "A <relation> B" holds with a clear gap and small off-axis offset."""
    lo_a, hi_a = BORDER_MARGIN + size_a, IMAGE_SIZE - BORDER_MARGIN - size_a
    lo_b, hi_b = BORDER_MARGIN + size_b, IMAGE_SIZE - BORDER_MARGIN - size_b
    # On-axis coordinate: "first" is the object with the smaller coordinate (above / left of).
    a_first = relation in ("above", "left of")
    lo_first, hi_second = (lo_a, hi_b) if a_first else (lo_b, hi_a)
    distance = rng.uniform(size_a + size_b + OBJECT_GAP, hi_second - lo_first)
    first = rng.uniform(lo_first, hi_second - distance)
    on_a, on_b = (first, first + distance) if a_first else (first + distance, first)
    # Off-axis coordinate: B within MAX_OFF_AXIS_RATIO * distance of A, inside the image.
    off_a = rng.uniform(lo_a, hi_a)
    reach = MAX_OFF_AXIS_RATIO * distance
    off_b = rng.uniform(max(lo_b, off_a - reach), min(hi_b, off_a + reach))
    if relation in ("above", "below"):
        return (off_a, on_a), (off_b, on_b)
    return (on_a, off_a), (on_b, off_b)


def sample_spec(
    rng: np.random.Generator,
    kind: str = "single",
    *,
    labels: SceneLabels | None = None,
    exclude_heldout: bool = False,
) -> SceneSpec:
    """A random scene: random labels of ``kind`` unless ``labels`` fixes them, then random
    sizes, positions, shades and background."""
    if labels is None:
        labels = sample_labels(rng, kind, exclude_heldout=exclude_heldout)
    elif exclude_heldout and is_heldout(labels):
        raise ValueError(f"labels {caption(labels)!r} are held out")
    background = _sample_background(rng)
    if len(labels.objects) == 1:
        size = float(rng.uniform(*SINGLE_SIZE_RANGE))
        centre = tuple(float(v) for v in rng.uniform(BORDER_MARGIN + size, IMAGE_SIZE - BORDER_MARGIN - size, size=2))
        return SceneSpec((_sample_object(rng, labels.objects[0], size, centre),), background)
    sizes = [float(s) for s in rng.uniform(*COMPOSITION_SIZE_RANGE, size=2)]
    centres = _place_pair(rng, sizes[0], sizes[1], labels.relation)
    objects = tuple(
        _sample_object(rng, label, size, tuple(float(v) for v in centre))
        for label, size, centre in zip(labels.objects, sizes, centres)
    )
    return SceneSpec(objects, background, labels.relation)


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Outline of a polygonal shape in its unit box [-1, 1]^2 (y down); all shapes are upright."""
    if shape == "square":
        return [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    if shape == "triangle":
        return [(0.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    if shape == "star":
        # Five points, inner radius 0.5; shifted down so its box is centred on the origin.
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        shift = (1.0 - np.cos(np.pi / 5)) / 2
        return list(zip(radii * np.cos(angles), radii * np.sin(angles) + shift))
    if shape == "cross":
        # A plus sign with arms 0.7 wide: thick enough to survive blur at 32x32.
        a = 0.35
        return [
            (-a, -1),
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
        ]
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether unit-box points (u, v) lie inside a shape (even-odd rule for polygons)."""
    if shape == "circle":
        return u**2 + v**2 <= 1.0
    polygon = _unit_polygon(shape)
    inside = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if y1 != y2:  # horizontal edges never cross a horizontal ray
            crossing_x = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
            inside ^= ((y1 > v) != (y2 > v)) & (u < crossing_x)
    return inside


def coverage(shape: str, size: float, centre: tuple[float, float], image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Antialiased fractional pixel coverage of a shape, float32 (H, W) in [0, 1], from
    SUPERSAMPLE x SUPERSAMPLE point samples per pixel (pixel k spans [k, k + 1])."""
    samples = (np.arange(image_size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    inside = _inside(shape, (samples[None, :] - centre[0]) / size, (samples[:, None] - centre[1]) / size)
    s = SUPERSAMPLE
    return inside.reshape(image_size, s, image_size, s).mean(axis=(1, 3)).astype(np.float32)


def _render_background(bg: Background) -> np.ndarray:
    axis = (np.arange(IMAGE_SIZE) + 0.5) / (IMAGE_SIZE / 2) - 1.0  # -1 .. 1 across the image
    brightness = bg.gradient[0] * axis[None, :] + bg.gradient[1] * axis[:, None]
    return np.asarray(bg.rgb)[None, None, :] + brightness[:, :, None]


def render(spec: SceneSpec) -> np.ndarray:
    """Render a scene to a uint8 (32, 32, 3) RGB array; deterministic in ``spec``."""
    image = _render_background(spec.background)
    for obj in spec.objects:
        alpha = coverage(obj.shape, obj.size, obj.centre)[:, :, None]
        colour = np.asarray(PALETTE[obj.colour]) / 255.0 * obj.shade
        image = image * (1.0 - alpha) + colour * alpha
    if spec.background.noise_std > 0:
        noise_rng = np.random.default_rng(spec.background.noise_seed)
        image = image + noise_rng.normal(0.0, spec.background.noise_std, size=image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def sample_training_batch(
    rng: np.random.Generator, n: int, composition_fraction: float = 0.2
) -> tuple[np.ndarray, list[str], list[SceneSpec]]:
    """Training mix: ``n`` scenes (uint8 (n, 32, 32, 3)), their captions and specs.

    Each scene is a composition with probability ``composition_fraction`` (compositions
    are rarer, as in web captions), otherwise a single object; held-out objects and
    pairs are never produced.
    """
    if not 0.0 <= composition_fraction <= 1.0:
        raise ValueError(f"composition_fraction must be in [0, 1], got {composition_fraction}")
    specs = [
        sample_spec(rng, "composition" if rng.random() < composition_fraction else "single", exclude_heldout=True)
        for _ in range(n)
    ]
    images = np.stack([render(s) for s in specs]) if specs else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return images, [caption(s) for s in specs], specs


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) images -> float tensor in [0, 1], (3, H, W) or (N, 3, H, W)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    return tensor.movedim(-1, -3)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Inverse of ``to_tensor``: float [0, 1] (..., 3, H, W) -> uint8 (..., H, W, 3)."""
    return (images.detach().clamp(0, 1).movedim(-3, -1) * 255.0).round().to(torch.uint8).cpu().numpy()
