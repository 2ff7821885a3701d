"""Zones of a camera's view: ignore masks and include zones (frame-relative polygons).

A zone is a polygon of 3..64 points ``[x, y]`` with ``x``, ``y`` in ``[0, 1]`` of the
frame's width and height (so it survives a change of resolution). Each camera has

- **ignore masks**: a face is dropped when the centre of its box lies inside one
  (``min_overlap`` 0, the default), or, with ``min_overlap`` > 0, when at least that share
  of its box lies inside the masks (their union);
- **include zones** (optional): when a camera has any, only faces whose box centre lies
  inside one of them are kept.

The engine applies them to every detections entry *before* tracking
(:meth:`CameraZones.classify`): a dropped face starts no track, never alerts and does not
count for compliance; it is counted in ``facemask_alerts_faces_ignored_total{reason}``
(``ignore_mask`` first, then ``outside_zone``). Zones come from the ``zones`` setting
(JSON by camera id) and from ``PUT /api/cameras/{camera_id}/zones``; zones set through the
API are stored in SQLite and replace the configured ones of that camera
(:class:`ZoneBook`).

Geometry (numpy, vectorised over faces and sample points; the only Python loop is over
polygons): a point is inside a polygon by the even-odd crossing rule (self-intersecting
polygons count by parity; a point exactly on an edge may count either way). The share of
a box inside the masks is measured on a grid of ``SAMPLE_SIDE`` x ``SAMPLE_SIDE`` cell
centres of the box: for a straight mask edge across the box it is within
``1 / SAMPLE_SIDE`` of the exact share (exact for edges on the grid lines, such as a
vertical or horizontal edge through the box's middle).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from facemask.core.types import Detections

logger = logging.getLogger(__name__)

MIN_POINTS = 3
MAX_POINTS = 64
MAX_POLYGONS = 32
SAMPLE_SIDE = 16
"""Sample grid side of the share-of-box measure (256 points per face)."""
NAME_PATTERN = r"^[\w][\w .,:#()/+-]{0,63}$"
"""Zone names: 1..64 letters, digits, spaces and ``. , : # ( ) / + -``, starting with a
letter or digit (shown on the dashboard; no markup, no control characters)."""

KEEP, IGNORE_MASK, OUTSIDE_ZONE = 0, 1, 2
REASONS = ("", "ignore_mask", "outside_zone")
"""Reason of each verdict code (``facemask_alerts_faces_ignored_total{reason}``)."""

ZoneSource = Literal["config", "api", "none"]

Coordinate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
_NAME_RE = re.compile(NAME_PATTERN.replace("$", r"\Z"))


def _zone_name(value: str) -> str:
    name = value.strip()
    if not _NAME_RE.match(name):
        raise ValueError(
            f"bad name {name[:70]!r}: 1..64 letters, digits, spaces or . , : # ( ) / + -, "
            "starting with a letter or digit"
        )
    return name


ZoneName = Annotated[str, AfterValidator(_zone_name)]


def polygon_area(points: npt.ArrayLike) -> float:
    """Absolute area of a polygon ``[P, 2]`` (shoelace formula)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


class Polygon(BaseModel):
    """One named polygon in frame-relative coordinates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ZoneName = Field(description="1..64 letters, digits, spaces, . , : # ( ) / + -")
    points: list[tuple[Coordinate, Coordinate]] = Field(
        min_length=MIN_POINTS,
        max_length=MAX_POINTS,
        description="[[x, y], ...]: 3..64 points, x and y in [0, 1] of the frame's size",
    )

    @model_validator(mode="after")
    def _has_area(self) -> Polygon:
        if polygon_area(self.points) <= 1e-9:
            raise ValueError(f"polygon {self.name!r} has no area (its points are on one line)")
        return self


class ZoneSpec(BaseModel):
    """A camera's ignore masks and include zones (the body of ``PUT .../zones``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ignore: list[Polygon] = Field(
        default_factory=list,
        max_length=MAX_POLYGONS,
        description="masks: faces inside are dropped before tracking (at most 32)",
    )
    include: list[Polygon] = Field(
        default_factory=list,
        max_length=MAX_POLYGONS,
        description="zones: when any, only faces whose centre is inside one are kept (at most 32)",
    )
    min_overlap: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="share of a face box inside the ignore masks that drops it "
        "(0: the box centre decides)",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ZoneSpec:
        for kind in ("ignore", "include"):
            names = [p.name for p in getattr(self, kind)]
            doubled = sorted({n for n in names if names.count(n) > 1})
            if doubled:
                raise ValueError(f"{kind}: polygon names must be unique, {doubled} repeated")
        return self

    @property
    def empty(self) -> bool:
        """No polygon at all."""
        return not self.ignore and not self.include


def zone_problems(exc: ValidationError) -> str:
    """The problems of an invalid zones document, one readable phrase each."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (valid: ignore, include, min_overlap; polygons: name, points)"
        problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)


# -- geometry ----------------------------------------------------------------------------


def points_in_polygon(points: npt.ArrayLike, polygon: npt.ArrayLike) -> np.ndarray:
    """Boolean ``[M]``: which of ``points [M, 2]`` lie inside ``polygon [P, 2]`` (even-odd
    crossing rule, one ``[M, P]`` comparison)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)  # the edge spans the point's height (half-open)
    dy = np.where(y2 == y1, 1.0, y2 - y1)  # horizontal edges never cross: any divisor
    x_cross = x1 + (y - y1) * (x2 - x1) / dy
    return (np.count_nonzero(crosses & (x < x_cross), axis=1) % 2) == 1


def inside_any(points: npt.ArrayLike, polygons: tuple[np.ndarray, ...]) -> np.ndarray:
    """Boolean ``[M]``: points inside at least one of ``polygons``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(pts), dtype=bool)
    for polygon in polygons:
        out |= points_in_polygon(pts, polygon)
    return out


def box_centres(xyxy: npt.ArrayLike) -> np.ndarray:
    """Centres ``[N, 2]`` of boxes ``[N, 4]``."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=1)


def box_samples(xyxy: npt.ArrayLike, side: int = SAMPLE_SIDE) -> np.ndarray:
    """The ``side`` x ``side`` grid cell centres of each box: ``[N, side * side, 2]``."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    steps = (np.arange(side, dtype=np.float64) + 0.5) / side  # [S]
    xs = b[:, 0:1] + steps[None, :] * (b[:, 2:3] - b[:, 0:1])  # [N, S]
    ys = b[:, 1:2] + steps[None, :] * (b[:, 3:4] - b[:, 1:2])
    grid_x = np.repeat(xs[:, None, :], side, axis=1)  # [N, S(y), S(x)]
    grid_y = np.repeat(ys[:, :, None], side, axis=2)
    return np.stack([grid_x, grid_y], axis=-1).reshape(len(b), side * side, 2)


def covered_share(
    xyxy: npt.ArrayLike, polygons: tuple[np.ndarray, ...], side: int = SAMPLE_SIDE
) -> np.ndarray:
    """Share ``[N]`` (0..1) of each box ``[N, 4]`` inside the union of ``polygons``,
    measured on the box's ``side`` x ``side`` sample grid."""
    samples = box_samples(xyxy, side)
    count = samples.shape[0]
    if not count:
        return np.zeros(0)
    inside = inside_any(samples.reshape(-1, 2), polygons).reshape(count, side * side)
    return inside.mean(axis=1)


# -- one camera's zones ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CameraZones:
    """A camera's zones, compiled to arrays (immutable: replaced as a whole on a change)."""

    spec: ZoneSpec
    source: ZoneSource
    ignore: tuple[np.ndarray, ...]
    include: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, spec: ZoneSpec, source: ZoneSource) -> CameraZones:
        """Compile a spec."""

        def arrays(polygons: list[Polygon]) -> tuple[np.ndarray, ...]:
            return tuple(np.asarray(p.points, dtype=np.float64).reshape(-1, 2) for p in polygons)

        return cls(spec, source, arrays(spec.ignore), arrays(spec.include))

    @property
    def active(self) -> bool:
        """Whether any polygon can drop a face."""
        return bool(self.ignore or self.include)

    def classify(self, faces: Detections) -> np.ndarray:
        """The verdict ``[N]`` of each face: :data:`KEEP`, :data:`IGNORE_MASK` or
        :data:`OUTSIDE_ZONE` (a face both masked and outside counts as masked)."""
        verdict = np.full(len(faces), KEEP, dtype=np.int64)
        if not len(faces) or not self.active:
            return verdict
        boxes = np.clip(faces.xyxy, 0.0, 1.0)
        centres = box_centres(boxes)
        if self.include:
            verdict[~inside_any(centres, self.include)] = OUTSIDE_ZONE
        if self.ignore:
            if self.spec.min_overlap > 0:
                masked = covered_share(boxes, self.ignore) >= self.spec.min_overlap
            else:
                masked = inside_any(centres, self.ignore)
            verdict[masked] = IGNORE_MASK
        return verdict


NO_ZONES = CameraZones.of(ZoneSpec(), "none")


# -- every camera's zones ----------------------------------------------------------------


class ZoneStore(Protocol):
    """Where zones set through the API are kept (:class:`~services.alerts.store.AlertStore`)."""

    def load_zones(self) -> dict[str, dict[str, Any]]: ...

    def save_zones(self, camera_id: str, zones: Mapping[str, Any]) -> None: ...

    def delete_zones(self, camera_id: str) -> bool: ...


class ZoneBook:
    """Every camera's zones: the configured ones, replaced per camera by the ones set
    through the API (stored first, so they survive a restart). Thread-safe: the API
    writes, the engine reads once per detections entry."""

    def __init__(
        self, configured: Mapping[str, ZoneSpec] | None = None, store: ZoneStore | None = None
    ) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._configured = {
            cid: CameraZones.of(s, "config") for cid, s in (configured or {}).items()
        }
        self._api: dict[str, CameraZones] = {}
        for camera_id, raw in (store.load_zones() if store is not None else {}).items():
            try:
                self._api[camera_id] = CameraZones.of(ZoneSpec.model_validate(raw), "api")
            except ValueError as exc:  # written by hand, or by another build
                logger.warning(
                    "stored zones unreadable; the configured ones apply",
                    extra={"camera_id": camera_id, "error": str(exc)},
                )

    def get(self, camera_id: str) -> CameraZones:
        """The camera's zones (:data:`NO_ZONES` when it has none)."""
        with self._lock:
            found = self._api.get(camera_id) or self._configured.get(camera_id)
        return found or NO_ZONES

    def set(self, camera_id: str, spec: ZoneSpec) -> CameraZones:
        """Replace the camera's zones (stored first); effective for its next entry.
        An empty spec is kept too: it switches the configured zones off."""
        zones = CameraZones.of(spec, "api")
        with self._lock:
            if self.store is not None:
                self.store.save_zones(camera_id, spec.model_dump(mode="json"))
            self._api[camera_id] = zones
        return zones

    def forget(self, camera_id: str) -> bool:
        """Drop the zones set through the API (the configured ones apply again); True
        when there were any."""
        with self._lock:
            stored = self.store.delete_zones(camera_id) if self.store is not None else False
            return self._api.pop(camera_id, None) is not None or stored
