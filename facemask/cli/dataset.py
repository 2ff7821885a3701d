"""``facemask dataset export --reviewed``: the alerts people reviewed, as a COCO training set.

The command talks to a running alert service over its HTTP API (the library never imports
the services): it pages through ``/api/alerts?state=reviewed`` (with the optional camera
and time filters) and downloads each alert's clean frame (``/api/alerts/{id}/frame.jpg``,
the camera's bytes as captured, no boxes drawn). It writes::

    DIR/annotations.json      COCO: images, annotations, categories (1 mask, 2 no_mask)
    DIR/images/<alert id>.jpg the clean frames (.png for a PNG camera)

the layout of ``../shared/data/facemask-train`` (``facemask eval --annotations
DIR/annotations.json --images DIR/images`` reads it). The faces of an image:

* **confirmed**: every face of the alert's frame whose score reaches the alert rule's
  ``min_score`` (the rule the alert was raised under, stored with it), with the model's
  label; the violator's face is ``no_mask``;
* **false positive**: the same faces, the violator's face corrected to ``mask``, or left
  out for the label ``none`` (not a person's face: a poster, a reflection);
* new and acknowledged alerts were not judged by anyone: never exported.

Each annotation says where its label comes from (``source``: ``review`` for the violator's
face, ``model`` for the others) and carries the model's ``score``; each image names its
``alert_id``, ``camera_id``, ``ts`` and ``review_state`` / ``review_label``. Alerts whose
clean frame is no longer kept (never kept, or deleted by the snapshot retention) are
skipped and counted, unless a previous export left the frame in ``DIR/images``.

Exporting again into the same directory is idempotent: frames already there are not
downloaded again, ``annotations.json`` is rewritten (atomically) from the current reviews,
ids in capture-time order. Files of alerts no longer reviewed are left in place (the
service prunes alerts older than its history; an earlier export keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemask.contracts.wire import WireError, parse_detections
from facemask.core.types import LABEL_IDS, Detections
from facemask.infra.redact import redact_url
from facemask.model.evaluation import CATEGORY_NAMES, category_id, coco_boxes

HELP = "build training data from reviewed alerts (COCO)"
TOKEN_ENV = "FACEMASK_ALERTS_API_TOKEN"
PAGE_SIZE = 500
"""Alerts asked for per page (the API's maximum)."""
CATEGORIES = [{"id": cid, "name": name} for cid, name in sorted(CATEGORY_NAMES.items())]
EXPORTED_STATES = ("confirmed", "false_positive")
FRAME_SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png"}


class ExportError(RuntimeError):
    """A clear, one-line reason the export cannot go on (unreachable, 401, bad answer)."""


class HttpStatusError(ExportError):
    """The alert service answered an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- the alert service's API ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertsApi:
    """The few calls the export makes to an alert service (``urllib``: no extra package)."""

    url: str
    token: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ExportError(f"--url must be http(s)://host[:port], got {self.url!r}")

    @property
    def shown(self) -> str:
        """The URL as messages show it (no password)."""
        return redact_url(self.url.rstrip("/"))

    def _open(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(self.url.rstrip("/") + path + query)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # http(s) only
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise HttpStatusError(
                    401,
                    f"the alert service at {self.shown} refused the request (HTTP 401): pass "
                    f"its API token with --token or {TOKEN_ENV}",
                ) from None
            raise HttpStatusError(
                exc.code, f"GET {path}: HTTP {exc.code}: {_message(exc)}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ExportError(f"cannot reach the alert service at {self.shown}: {reason}") from None

    def json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """A JSON answer."""
        with self._open(path, params) as response:
            body = response.read()
        try:
            return json.loads(body)
        except ValueError:
            raise ExportError(f"GET {path}: the answer is not JSON: {body[:80]!r}") from None

    def picture(self, path: str) -> tuple[bytes, str] | None:
        """A picture's bytes and media type; None when the service has none (404)."""
        try:
            with self._open(path) as response:
                return response.read(), response.headers.get_content_type()
        except HttpStatusError as exc:
            if exc.status == 404:
                return None
            raise

    def alerts(self, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Every alert of ``/api/alerts`` with these filters, page after page."""
        query = {**params, "limit": str(PAGE_SIZE)}
        while True:
            page = self.json("/api/alerts", query)
            if not isinstance(page, dict) or not isinstance(page.get("alerts"), list):
                raise ExportError(f"/api/alerts of {self.shown} answered no alert page")
            yield from page["alerts"]
            cursor = page.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = str(cursor)


def _message(exc: urllib.error.HTTPError) -> str:
    """The ``message`` of the API's problem answer, else the status' reason."""
    try:
        return str(json.loads(exc.read())["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


# -- what an alert contributes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelledFaces:
    """The faces of one exported frame: their boxes, scores, true labels and sources."""

    detections: Detections
    reviewed: np.ndarray
    """Boolean ``[N]``: the label is a person's (the violator's face), not the model's."""


def labelled_faces(alert: Mapping[str, Any]) -> LabelledFaces:
    """The faces a reviewed alert puts in the training set (see the module docstring)."""
    width, height = int(alert["width"]), int(alert["height"])
    review = alert["review"]
    state = review["state"]
    if state not in EXPORTED_STATES:
        raise ValueError(f"alert {alert['id']} is {state}, not reviewed")
    true_label = review.get("label") or ("no_mask" if state == "confirmed" else "mask")
    try:
        faces = parse_detections(alert["detections"], width, height)
    except WireError as exc:
        raise ExportError(f"alert {alert['id']}: unreadable detections: {exc.detail}") from None
    min_score = float((alert.get("rule") or {}).get("min_score", 0.0))
    box = [int(v) for v in alert["box"]]
    (row,) = faces.index_of([box], width, height).tolist()
    if row < 0:  # the violator's box is not among the faces: add it
        extra = Detections.from_pixels([box], [float(alert["score"])], [0], width, height)
        faces, row = Detections.concat([faces, extra]), len(faces)
    keep = faces.scores >= min_score
    keep[row] = true_label != "none"
    class_ids = faces.class_ids.copy()
    if true_label != "none":
        class_ids[row] = LABEL_IDS[true_label]
    reviewed = np.zeros(len(faces), dtype=bool)
    reviewed[row] = True
    corrected = Detections(faces.xyxy, faces.scores, class_ids)
    return LabelledFaces(corrected[keep], reviewed[keep])


# -- the export -------------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """What an export did."""

    images: Counter[str] = field(default_factory=Counter)  # by review state
    faces: Counter[str] = field(default_factory=Counter)  # by category name
    downloaded: int = 0
    present: int = 0
    skipped: int = 0  # no clean frame kept

    def line(self, out: Path) -> str:
        """The one-line summary the command prints."""
        images = sum(self.images.values())
        return (
            f"exported {images} images ({self.images['confirmed']} confirmed,"
            f" {self.images['false_positive']} false positives) and"
            f" {sum(self.faces.values())} faces ({self.faces['mask']} mask,"
            f" {self.faces['no_mask']} no_mask) to {out};"
            f" {self.downloaded} frames downloaded, {self.present} already there;"
            f" skipped {self.skipped} alerts without a kept frame"
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _frame_file(api: AlertsApi, alert: Mapping[str, Any], images: Path, summary: Summary) -> str:
    """The clean frame's file name in ``images`` (downloaded when not there); "" when the
    service no longer keeps it."""
    alert_id = str(alert["id"])
    for suffix in FRAME_SUFFIXES.values():
        if (images / f"{alert_id}{suffix}").is_file():
            summary.present += 1
            return f"{alert_id}{suffix}"
    if not alert.get("frame_url"):
        return ""
    got = api.picture(f"/api/alerts/{alert_id}/frame.jpg")
    if got is None:
        return ""
    data, media = got
    name = f"{alert_id}{FRAME_SUFFIXES.get(media, '.jpg')}"
    _write_atomic(images / name, data)
    summary.downloaded += 1
    return name


def export(
    api: AlertsApi,
    out: Path,
    *,
    camera_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Summary:
    """Export the reviewed alerts (filters as ``/api/alerts`` takes them) into ``out``."""
    params = {"state": "reviewed"}
    for key, value in (("camera_id", camera_id), ("since", since), ("until", until)):
        if value:
            params[key] = value
    alerts = sorted(api.alerts(params), key=lambda a: (float(a["ts"]), str(a["id"])))
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for alert in alerts:
        if not isinstance(alert.get("review"), dict):
            raise ExportError(
                f"the alert service at {api.shown} does not review alerts (an older version)"
            )
        if alert["review"]["state"] not in EXPORTED_STATES:
            continue  # an alert whose review changed between two pages
        faces = labelled_faces(alert)
        name = _frame_file(api, alert, images_dir, summary)
        if not name:
            summary.skipped += 1
            continue
        width, height = int(alert["width"]), int(alert["height"])
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "width": width,
                "height": height,
                "alert_id": alert["id"],
                "camera_id": alert["camera_id"],
                "ts": alert["ts"],
                "review_state": alert["review"]["state"],
                "review_label": alert["review"]["label"],
            }
        )
        summary.images[alert["review"]["state"]] += 1
        dets = faces.detections
        for box, score, class_id, reviewed in zip(
            coco_boxes(dets, width, height).tolist(),
            dets.scores.tolist(),
            dets.class_ids.tolist(),
            faces.reviewed.tolist(),
            strict=True,
        ):
            category = category_id(class_id)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                    "score": round(score, 4),
                    "source": "review" if reviewed else "model",
                }
            )
            summary.faces[CATEGORY_NAMES[category]] += 1
    document = {
        "info": {
            "description": "facemask alerts reviewed by people (facemask dataset export "
            "--reviewed): confirmed faces with their labels, false positives corrected",
            "version": "1.0",
            "source": api.shown,
            "filters": params,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    _write_atomic(out / "annotations.json", json.dumps(document).encode() + b"\n")
    return summary


# -- command line -----------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``dataset`` sub-commands."""
    sub = parser.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    exp = sub.add_parser(
        "export",
        help="write reviewed alerts as a COCO dataset (annotations.json + images/)",
        description="Write the alerts people reviewed as a COCO dataset: DIR/annotations.json "
        "and DIR/images/<alert id>.jpg (the clean frames). Confirmed alerts give every face "
        "at the alert rule's min_score with its label (the violator no_mask); false "
        "positives the same with the violator's face corrected to mask, or left out for the "
        "label none. New and acknowledged alerts are not exported. Talks to the alert "
        "service's HTTP API; exporting again into DIR is idempotent.",
    )
    exp.add_argument(
        "--reviewed",
        action="store_true",
        required=True,
        help="export confirmed and false-positive alerts only (required: new and "
        "acknowledged alerts were not judged by anyone and are never exported)",
    )
    exp.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="the alert service (default %(default)s)",
    )
    exp.add_argument(
        "--token",
        default=None,
        help=f"its API token (default: ${TOKEN_ENV}; none when unset)",
    )
    exp.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    exp.add_argument("--camera", default=None, metavar="ID", help="only this camera's alerts")
    exp.add_argument(
        "--since", default=None, help="alerts from this time (ISO-8601 or unix seconds)"
    )
    exp.add_argument(
        "--until", default=None, help="alerts before this time (ISO-8601 or unix seconds)"
    )
    exp.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)"
    )


def run(args: argparse.Namespace) -> int:
    """Export; one summary line, or one clear error line and exit 1."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    try:
        api = AlertsApi(args.url, token, args.timeout)
        summary = export(api, args.out, camera_id=args.camera, since=args.since, until=args.until)
    except (ExportError, OSError) as exc:
        sys.stderr.write(f"facemask dataset export: error: {exc}\n")
        return 1
    sys.stdout.write(summary.line(args.out) + "\n")
    return 0
