"""Wire format of the Redis stream entries exchanged by the services (format version 1).

Frame entry (ingest -> inference), fields of one ``XADD``::

    v       "1"                    format version
    camera  camera id              see "Camera ids" below
    frame   frame id               decimal int >= 0, increasing per camera
    ts      capture time           unix seconds, decimal float (see "Capture times")
    enc     "jpeg" | "png"
    w, h    image size in pixels   1..16384, w*h <= 64 Mpx
    data    encoded image bytes    non-empty, <= MAX_FRAME_BYTES
    node    ingest node name       optional

Detections entry (inference -> alerts, dashboards), one per frame::

    v          "1"
    camera     camera id
    frame      frame id
    frame_sid  stream id of the frame entry (fetch the picture with XRANGE sid sid)
    ts         capture time (copied from the frame)
    t_done     when inference finished (unix seconds)
    status     "ok" | "skipped"          skipped: not run (see reason), no detections
    reason     why skipped ("too_old", ...); empty when ok
    w, h       image size in pixels
    model      model version that produced the detections (a model store version,
               ``upstream``, ...); optional when reading: entries of older writers lack
               it (parsed as ``""``)
    dets       JSON list: [{"label": "mask"|"no_mask", "score": f, "box": [x1,y1,x2,y2]}]
    runs       model runs spent on the frame (1 without tiling)

Entries are ``dict[bytes, bytes]`` as redis-py returns them; every parser raises
:class:`WireError` with a short machine-readable ``reason`` for the dead-letter stream
and the metrics.

Camera ids
    ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`` (:data:`CAMERA_ID_PATTERN`): 1..64 ASCII
    letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit. Such an id is
    safe as a Prometheus label value, a Redis key part, a URL path segment and a file
    name, and cannot collide with the metrics' overflow label (``_other``). One function,
    :func:`validate_camera_id`, checks it everywhere: the ingest configuration, every
    parser here, the camera registry reads and the alert API's parameters
    (reason ``bad_camera``).

Capture times
    ``ts`` (and ``t_done``) must be finite, not before :data:`MIN_CAPTURE_TS`
    (2000-01-01: a camera with an unset clock) and not more than ``max_skew`` seconds
    (default :data:`DEFAULT_MAX_CLOCK_SKEW`) ahead of the receiver's clock ``now``; a
    receiver may also give ``max_age``. The parsers take ``now`` / ``max_skew`` /
    ``max_age`` as parameters (``now`` None: the wall clock); a violation raises reason
    ``bad_timestamp``, so the consumers dead-letter the entry.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facemask.core.preprocess import MAX_PIXELS
from facemask.core.types import LABEL_IDS, LABELS, Detections

FORMAT_VERSION = 1
ENCODINGS = ("jpeg", "png")
MAX_CAMERA_ID_LEN = 64
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""The documented charset of camera ids (see the module docstring)."""
_CAMERA_ID_RE = re.compile(CAMERA_ID_PATTERN.replace("$", r"\Z"))
MIN_CAPTURE_TS = 946_684_800.0
"""2000-01-01T00:00:00Z: an earlier capture time comes from a camera with an unset clock."""
DEFAULT_MAX_CLOCK_SKEW = 300.0
"""Seconds a capture time may lie ahead of the receiver's clock."""
MAX_SIDE = 16384
MAX_FRAME_BYTES = 32 * 1024 * 1024
MAX_MODEL_LEN = 128
"""Longest ``model`` field of a detections entry (a version id is 16 characters)."""

Fields = Mapping[bytes, bytes] | Mapping[str, Any]


class WireError(ValueError):
    """A malformed stream entry. ``reason`` is a short label (metric / dead-letter)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def is_valid_camera_id(camera_id: object) -> bool:
    """Whether ``camera_id`` is a string of the documented charset and length."""
    return isinstance(camera_id, str) and _CAMERA_ID_RE.match(camera_id) is not None


def validate_camera_id(camera_id: str) -> str:
    """Return ``camera_id`` if it matches :data:`CAMERA_ID_PATTERN`; else raise
    :class:`WireError` ``bad_camera`` with a message that says what is allowed."""
    if is_valid_camera_id(camera_id):
        return camera_id
    if not camera_id:
        raise WireError("bad_camera", "empty camera id")
    shown = ascii(camera_id[:MAX_CAMERA_ID_LEN])
    if len(shown) > 80 or len(camera_id) > MAX_CAMERA_ID_LEN:  # the message stays short
        shown = shown[:77] + "..."
    if len(camera_id) > MAX_CAMERA_ID_LEN:
        problem = f"is longer than {MAX_CAMERA_ID_LEN} characters"
    elif not camera_id[0].isascii() or not camera_id[0].isalnum():
        problem = "must start with an ASCII letter or digit"
    else:
        problem = "may only hold ASCII letters, digits, '.', '_' and '-'"
    raise WireError("bad_camera", f"camera id {shown} {problem} (pattern {CAMERA_ID_PATTERN})")


def check_timestamp(
    name: str,
    ts: float,
    *,
    now: float | None = None,
    max_skew: float = DEFAULT_MAX_CLOCK_SKEW,
    max_age: float | None = None,
) -> float:
    """Return ``ts`` (unix seconds) if it is finite, not before :data:`MIN_CAPTURE_TS`,
    at most ``max_skew`` seconds after ``now`` (None: the wall clock) and, with
    ``max_age``, at most that many seconds before it; else raise :class:`WireError`
    ``bad_timestamp``."""
    if not math.isfinite(ts):
        raise WireError("bad_timestamp", f"{name} is not finite")
    if ts < MIN_CAPTURE_TS:
        raise WireError(
            "bad_timestamp", f"{name}={ts:.3f} lies before 2000-01-01 (is the camera's clock set?)"
        )
    now = time.time() if now is None else now
    if ts > now + max_skew:
        raise WireError(
            "bad_timestamp",
            f"{name} lies {ts - now:.0f} s in the future (more than the allowed clock skew of "
            f"{max_skew:g} s)",
        )
    if max_age is not None and ts < now - max_age:
        raise WireError(
            "bad_timestamp", f"{name} lies {now - ts:.0f} s in the past (more than {max_age:g} s)"
        )
    return ts


def _norm(fields: Fields) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in fields.items():
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            out[k] = value
        elif isinstance(value, memoryview | bytearray):
            out[k] = bytes(value)
        else:
            out[k] = str(value).encode("utf-8")
    return out


def _text(f: dict[str, bytes], key: str, reason: str = "missing_field") -> str:
    if key not in f:
        raise WireError(reason, f"field {key!r} missing")
    try:
        return f[key].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("bad_field", f"field {key!r} is not UTF-8") from exc


def _optional_text(f: dict[str, bytes], key: str, max_len: int) -> str:
    """An optional text field (``""`` when absent) of at most ``max_len`` characters."""
    if key not in f:
        return ""
    value = _text(f, key)
    if len(value) > max_len:
        raise WireError("bad_field", f"field {key!r} is longer than {max_len} characters")
    return value


def _int(f: dict[str, bytes], key: str, lo: int, hi: int) -> int:
    raw = _text(f, key)
    try:
        value = int(raw)
    except ValueError as exc:
        raise WireError("bad_field", f"field {key!r}={raw[:32]!r} is not an integer") from exc
    if not lo <= value <= hi:
        raise WireError("bad_field", f"field {key!r}={value} outside {lo}..{hi}")
    return value


def _float(f: dict[str, bytes], key: str) -> float:
    raw = _text(f, key)
    try:
        value = float(raw)
    except ValueError as exc:
        raise WireError("bad_field", f"field {key!r}={raw[:32]!r} is not a number") from exc
    if not math.isfinite(value):
        raise WireError("bad_field", f"field {key!r} is not finite")
    return value


def _timestamp(f: dict[str, bytes], key: str, window: Mapping[str, Any]) -> float:
    raw = _text(f, key)
    try:
        value = float(raw)
    except ValueError as exc:
        raise WireError("bad_timestamp", f"field {key!r}={raw[:32]!r} is not a number") from exc
    return check_timestamp(key, value, **window)


def _version(f: dict[str, bytes]) -> None:
    raw = _text(f, "v")
    if raw != str(FORMAT_VERSION):
        raise WireError(
            "bad_version", f"format version {raw[:16]!r}, this build reads {FORMAT_VERSION}"
        )


def _size(f: dict[str, bytes]) -> tuple[int, int]:
    width = _int(f, "w", 1, 2**31)
    height = _int(f, "h", 1, 2**31)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise WireError("too_large", f"declared size {width}x{height}: a side exceeds {MAX_SIDE}")
    if width * height > MAX_PIXELS:
        raise WireError("too_large", f"declared size {width}x{height} exceeds {MAX_PIXELS} px")
    return width, height


@dataclass(frozen=True, slots=True)
class FrameEntry:
    """One camera frame on a frame stream."""

    camera_id: str
    frame_id: int
    capture_ts: float
    encoding: str
    width: int
    height: int
    data: bytes
    node: str = ""

    def to_fields(self) -> dict[str, bytes | str]:
        """Fields for ``XADD`` (validated on the way out too)."""
        validate_camera_id(self.camera_id)
        if self.encoding not in ENCODINGS:
            raise WireError("bad_encoding", f"encoding {self.encoding!r}")
        fields: dict[str, bytes | str] = {
            "v": str(FORMAT_VERSION),
            "camera": self.camera_id,
            "frame": str(self.frame_id),
            "ts": repr(self.capture_ts),
            "enc": self.encoding,
            "w": str(self.width),
            "h": str(self.height),
            "data": self.data,
        }
        if self.node:
            fields["node"] = self.node
        return fields

    @classmethod
    def from_fields(
        cls,
        fields: Fields,
        *,
        max_bytes: int = MAX_FRAME_BYTES,
        now: float | None = None,
        max_skew: float = DEFAULT_MAX_CLOCK_SKEW,
        max_age: float | None = None,
    ) -> FrameEntry:
        """Parse and validate a frame entry; raises :class:`WireError`. ``now`` (None: the
        wall clock), ``max_skew`` and ``max_age`` bound the capture time (see the module
        docstring)."""
        f = _norm(fields)
        _version(f)
        camera = validate_camera_id(_text(f, "camera"))
        frame_id = _int(f, "frame", 0, 2**63 - 1)
        ts = _timestamp(f, "ts", {"now": now, "max_skew": max_skew, "max_age": max_age})
        enc = _text(f, "enc")
        if enc not in ENCODINGS:
            raise WireError("bad_encoding", f"encoding {enc[:16]!r} not in {ENCODINGS}")
        width, height = _size(f)
        data = f.get("data", b"")
        if not data:
            raise WireError("empty_image", "no image bytes")
        if len(data) > max_bytes:
            raise WireError("too_large", f"{len(data)} image bytes exceed {max_bytes}")
        node = f["node"].decode("utf-8", "replace") if "node" in f else ""
        return cls(camera, frame_id, ts, enc, width, height, data, node)


@dataclass(frozen=True, slots=True)
class DetectionsEntry:
    """The inference result of one frame (or the record that it was skipped)."""

    camera_id: str
    frame_id: int
    frame_sid: str
    capture_ts: float
    done_ts: float
    width: int
    height: int
    model: str
    status: str = "ok"
    reason: str = ""
    detections: Detections = field(default_factory=Detections.empty)
    """The faces, image-relative; on the wire as integer pixel boxes of ``width`` x ``height``."""
    runs: int = 1

    def to_fields(self) -> dict[str, str]:
        """Fields for ``XADD``."""
        return {
            "v": str(FORMAT_VERSION),
            "camera": self.camera_id,
            "frame": str(self.frame_id),
            "frame_sid": self.frame_sid,
            "ts": repr(self.capture_ts),
            "t_done": repr(self.done_ts),
            "status": self.status,
            "reason": self.reason,
            "w": str(self.width),
            "h": str(self.height),
            "model": self.model,
            "dets": json.dumps(
                self.detections.to_json(self.width, self.height, digits=6), separators=(",", ":")
            ),
            "runs": str(self.runs),
        }

    @classmethod
    def from_fields(
        cls,
        fields: Fields,
        *,
        now: float | None = None,
        max_skew: float = DEFAULT_MAX_CLOCK_SKEW,
        max_age: float | None = None,
    ) -> DetectionsEntry:
        """Parse and validate a detections entry; raises :class:`WireError`. ``now``
        (None: the wall clock), ``max_skew`` and ``max_age`` bound the capture time and
        ``t_done`` (see the module docstring)."""
        f = _norm(fields)
        _version(f)
        camera = validate_camera_id(_text(f, "camera"))
        window: dict[str, Any] = {"now": now, "max_skew": max_skew, "max_age": max_age}
        capture_ts = _timestamp(f, "ts", window)
        done_ts = _timestamp(f, "t_done", window)
        status = _text(f, "status")
        if status not in ("ok", "skipped"):
            raise WireError("bad_field", f"status {status[:16]!r}")
        width, height = _size(f)
        try:
            raw = json.loads(_text(f, "dets"))
        except ValueError as exc:
            raise WireError("bad_detections", "field 'dets' is not JSON") from exc
        dets = parse_detections(raw, width, height)
        return cls(
            camera_id=camera,
            frame_id=_int(f, "frame", 0, 2**63 - 1),
            frame_sid=_text(f, "frame_sid"),
            capture_ts=capture_ts,
            done_ts=done_ts,
            width=width,
            height=height,
            model=_optional_text(f, "model", MAX_MODEL_LEN),
            status=status,
            reason=f.get("reason", b"").decode("utf-8", "replace"),
            detections=dets,
            runs=_int(f, "runs", 0, 1024) if "runs" in f else 1,
        )


def parse_detections(raw: Any, width: int, height: int) -> Detections:
    """The ``dets`` list of a detections entry (parsed JSON) of a ``width`` x ``height``
    frame; raises :class:`WireError` ``bad_detections``."""
    if not isinstance(raw, list):
        raise WireError("bad_detections", "field 'dets' is not a list")
    boxes: list[list[int]] = []
    scores: list[float] = []
    class_ids: list[int] = []
    for item in raw:
        if not isinstance(item, dict):
            raise WireError("bad_detections", "a detection is not an object")
        label = item.get("label")
        if label not in LABELS:
            raise WireError("bad_detections", f"label {str(label)[:16]!r}")
        score = item.get("score")
        if (
            not isinstance(score, int | float)
            or isinstance(score, bool)
            or not 0.0 <= float(score) <= 1.0
        ):
            raise WireError("bad_detections", f"score {str(score)[:16]!r}")
        box = item.get("box")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
        ):
            raise WireError("bad_detections", "box is not 4 integers")
        x1, y1, x2, y2 = box
        if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
            raise WireError("bad_detections", f"box {box} outside the {width}x{height} frame")
        boxes.append(box)
        scores.append(float(score))
        class_ids.append(LABEL_IDS[label])
    return Detections.from_pixels(boxes, scores, class_ids, width, height)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert on the alerts stream (alert service -> voice prompt, integrations)."""

    alert_id: str
    camera_id: str
    ts: float
    frame_id: int
    kind: str = "no_mask"
    score: float = 0.0
    track_id: int = 0
    message: str = ""

    def to_fields(self) -> dict[str, str]:
        """Fields for ``XADD``."""
        return {
            "v": str(FORMAT_VERSION),
            "alert": self.alert_id,
            "camera": self.camera_id,
            "ts": repr(self.ts),
            "frame": str(self.frame_id),
            "kind": self.kind,
            "score": repr(self.score),
            "track": str(self.track_id),
            "message": self.message,
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> AlertEvent:
        """Parse and validate an alert event; raises :class:`WireError`."""
        f = _norm(fields)
        _version(f)
        return cls(
            alert_id=_text(f, "alert"),
            camera_id=validate_camera_id(_text(f, "camera")),
            ts=_float(f, "ts"),
            frame_id=_int(f, "frame", 0, 2**63 - 1),
            kind=_text(f, "kind"),
            score=_float(f, "score") if "score" in f else 0.0,
            track_id=_int(f, "track", 0, 2**63 - 1) if "track" in f else 0,
            message=f.get("message", b"").decode("utf-8", "replace"),
        )


# -- dead letters ---------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """A Redis reply value (bytes or not) as text; undecodable bytes are replaced."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def deadletter_record(
    stream: str,
    sid: str,
    fields: Mapping[Any, Any],
    reason: str,
    detail: str,
    *,
    max_value_bytes: int,
) -> dict[str, Any]:
    """The dead-letter stream entry of an entry ``sid`` of ``stream`` that cannot be used:
    ``reason`` (a bounded word), ``error`` (the detail, cut to 500 characters), where it came
    from, its camera, the time, and its original fields as ``orig_<name>`` (each value cut
    to ``<truncated>`` beyond ``max_value_bytes``; names over 64 characters left out)."""
    record: dict[str, Any] = {
        "reason": reason,
        "error": detail[:500],
        "stream": stream,
        "sid": sid,
        "camera": as_text(fields.get(b"camera", fields.get("camera", "")))[:128],
        "t": repr(time.time()),
    }
    for key, value in fields.items():
        name = as_text(key)
        if name in record or len(name) > 64:
            continue
        raw = value if isinstance(value, bytes) else str(value).encode()
        record[f"orig_{name}"] = raw if len(raw) <= max_value_bytes else b"<truncated>"
    return record
