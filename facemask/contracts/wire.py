"""Wire format of the Redis stream entries exchanged by the services (format version 1).

Frame entry (ingest -> inference), fields of one ``XADD``::

    v       "1"                    format version
    camera  camera id              1..128 printable characters, no whitespace
    frame   frame id               decimal int >= 0, increasing per camera
    ts      capture time           unix seconds, decimal float
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
    model      model version that produced the detections
    dets       JSON list: [{"label": "mask"|"no_mask", "score": f, "box": [x1,y1,x2,y2]}]
    runs       model runs spent on the frame (1 without tiling)

Entries are ``dict[bytes, bytes]`` as redis-py returns them; every parser raises
:class:`WireError` with a short machine-readable ``reason`` for the dead-letter stream
and the metrics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facemask.core.preprocess import MAX_PIXELS
from facemask.core.types import LABEL_IDS, LABELS, Detections

FORMAT_VERSION = 1
ENCODINGS = ("jpeg", "png")
MAX_CAMERA_ID_LEN = 128
MAX_SIDE = 16384
MAX_FRAME_BYTES = 32 * 1024 * 1024

Fields = Mapping[bytes, bytes] | Mapping[str, Any]


class WireError(ValueError):
    """A malformed stream entry. ``reason`` is a short label (metric / dead-letter)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def validate_camera_id(camera_id: str) -> str:
    """Return ``camera_id`` if it is 1..128 printable, non-space characters; else raise."""
    if not camera_id:
        raise WireError("bad_camera", "empty camera id")
    if len(camera_id) > MAX_CAMERA_ID_LEN:
        raise WireError("bad_camera", f"camera id longer than {MAX_CAMERA_ID_LEN} characters")
    if not camera_id.isprintable() or any(c.isspace() for c in camera_id):
        raise WireError("bad_camera", f"camera id {camera_id!r} has control or space characters")
    return camera_id


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
    def from_fields(cls, fields: Fields, *, max_bytes: int = MAX_FRAME_BYTES) -> FrameEntry:
        """Parse and validate a frame entry; raises :class:`WireError`."""
        f = _norm(fields)
        _version(f)
        camera = validate_camera_id(_text(f, "camera"))
        frame_id = _int(f, "frame", 0, 2**63 - 1)
        ts = _float(f, "ts")
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
    def from_fields(cls, fields: Fields) -> DetectionsEntry:
        """Parse and validate a detections entry; raises :class:`WireError`."""
        f = _norm(fields)
        _version(f)
        camera = validate_camera_id(_text(f, "camera"))
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
            capture_ts=_float(f, "ts"),
            done_ts=_float(f, "t_done"),
            width=width,
            height=height,
            model=_text(f, "model"),
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
