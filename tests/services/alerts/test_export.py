"""``facemask dataset export --reviewed`` against a running alert service (real Redis, real
detections entries, the HTTP API): the COCO file loads in pycocotools with the right
images, faces and labels; re-exporting is idempotent; filters; clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pycocotools.coco import COCO

from facemask.cli import main
from facemask.dev.localredis import RedisProcess, free_port
from facemask.dev.waiting import wait_until
from services.alerts.service import AlertService
from tests.services.alerts.conftest import (
    PERSON_A,
    PERSON_B,
    PERSON_C,
    Feeder,
    bare,
    drained,
    fast_settings,
    masked,
    running,
)

TOKEN = "t0ken-for-tests"
START = float(int(time.time()) // 60 * 60 - 3600)  # a whole minute, an hour ago
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# In every frame: A bare (the violator), B masked, C bare below min_score (0.6).
FACES = [bare(PERSON_A, 0.93), masked(PERSON_B, 0.88), bare(PERSON_C, 0.3)]
# camera -> the review it gets (None: left new)
REVIEWS: dict[str, dict[str, Any] | None] = {
    "cam-confirmed": {"state": "confirmed", "by": "ana"},
    "cam-masked": {"state": "false_positive", "by": "ana"},  # label mask (default)
    "cam-poster": {"state": "false_positive", "label": "none", "note": "poster"},
    "cam-ack": {"state": "acknowledged"},
    "cam-new": None,
    "cam-noframe": {"state": "confirmed"},  # its frame left the stream before the alert
}


def coco_box(box: tuple[int, int, int, int]) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


@pytest.fixture()
def reviewed(
    redis_server: RedisProcess,
    redis_client: redis.Redis,
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
) -> Any:
    """A service with one alert per camera of REVIEWS, each reviewed as REVIEWS says."""
    settings = fast_settings(
        redis_server.url, tmp_path / "state", api_token=TOKEN, rule_k=2, rule_n=3, cooldown=0.0
    )
    with running(settings) as service:
        start = START
        for i, camera in enumerate(REVIEWS):
            feed = Feeder(redis_client, camera, sample_jpeg, start_ts=start + 10 * i)
            for _ in range(2):
                feed.frame(FACES, keep_frame=camera != "cam-noframe")
        wait_until(lambda: drained(redis_client), 10, "entries consumed")
        base = f"http://127.0.0.1:{service.port}"
        alerts = httpx.get(f"{base}/api/alerts", headers=AUTH).json()["alerts"]
        ids = {a["camera_id"]: a["id"] for a in alerts}
        assert set(ids) == set(REVIEWS)
        for camera, body in REVIEWS.items():
            if body is not None:
                answer = httpx.post(
                    f"{base}/api/alerts/{ids[camera]}/review", json=body, headers=AUTH
                )
                assert answer.status_code == 200, answer.text
        yield service, ids


def export(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["dataset", "export", "--reviewed", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_reviewed_alerts_export_as_coco(
    reviewed: tuple[AlertService, dict[str, str]],
    sample_jpeg: tuple[bytes, int, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, ids = reviewed
    url = f"http://127.0.0.1:{service.port}"
    out = tmp_path / "dataset"
    monkeypatch.setenv("FACEMASK_ALERTS_API_TOKEN", TOKEN)
    code, stdout, stderr = export(["--url", url, "--out", str(out)], capsys)
    assert code == 0, stderr
    assert stdout.strip().endswith("skipped 1 alerts without a kept frame")
    assert "exported 3 images (1 confirmed, 2 false positives) and 5 faces (4 mask, 1 no_mask)" in (
        stdout
    )
    assert "3 frames downloaded, 0 already there" in stdout

    coco = COCO(str(out / "annotations.json"))
    assert coco.dataset["categories"] == [{"id": 1, "name": "mask"}, {"id": 2, "name": "no_mask"}]
    images = {img["alert_id"]: img for img in coco.loadImgs(coco.getImgIds())}
    camera_of = {alert_id: camera for camera, alert_id in ids.items()}
    assert sorted(camera_of[a] for a in images) == ["cam-confirmed", "cam-masked", "cam-poster"]
    width, height = sample_jpeg[1], sample_jpeg[2]

    def faces(camera: str) -> list[tuple[str, list[float], str]]:
        image = images[ids[camera]]
        assert (image["width"], image["height"]) == (width, height)
        assert image["camera_id"] == camera and image["file_name"] == f"{ids[camera]}.jpg"
        assert (out / "images" / image["file_name"]).read_bytes() == sample_jpeg[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert all(a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3] for a in anns)
        return sorted((coco.cats[a["category_id"]]["name"], a["bbox"], a["source"]) for a in anns)

    # Confirmed: every face at min_score with its label (C at 0.3 is left out).
    assert faces("cam-confirmed") == [
        ("mask", coco_box(PERSON_B), "model"),
        ("no_mask", coco_box(PERSON_A), "review"),
    ]
    assert images[ids["cam-confirmed"]]["review_state"] == "confirmed"
    # False positive: the violator's face corrected to mask ...
    assert faces("cam-masked") == [
        ("mask", coco_box(PERSON_A), "review"),
        ("mask", coco_box(PERSON_B), "model"),
    ]
    # ... or removed for "none" (not a person's face).
    assert faces("cam-poster") == [("mask", coco_box(PERSON_B), "model")]
    assert images[ids["cam-poster"]]["review_label"] == "none"
    assert len(coco.getAnnIds(catIds=[1])) == 4 and len(coco.getAnnIds(catIds=[2])) == 1
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{ids[c]}.jpg" for c in ("cam-confirmed", "cam-masked", "cam-poster")
    )

    # Again into the same directory: the same file, nothing downloaded again.
    first = (out / "annotations.json").read_bytes()
    code, stdout, _ = export(["--url", url, "--out", str(out)], capsys)
    assert code == 0 and "0 frames downloaded, 3 already there" in stdout
    assert (out / "annotations.json").read_bytes() == first

    # Filters go to the API: one camera, a time window.
    code, stdout, _ = export(
        ["--url", url, "--out", str(tmp_path / "one"), "--camera", "cam-masked"], capsys
    )
    assert code == 0 and "exported 1 images (0 confirmed, 1 false positives)" in stdout
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + 15))
    window = ["--since", str(START + 5), "--until", until]  # cam-masked only (START + 10)
    code, stdout, _ = export(["--url", url, "--out", str(tmp_path / "w"), *window], capsys)
    assert code == 0 and "exported 1 images" in stdout
    one = json.loads((tmp_path / "w" / "annotations.json").read_text())
    assert [i["camera_id"] for i in one["images"]] == ["cam-masked"]


def test_clear_errors(
    reviewed: tuple[AlertService, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, _ = reviewed
    url = f"http://127.0.0.1:{service.port}"
    monkeypatch.delenv("FACEMASK_ALERTS_API_TOKEN", raising=False)
    code, _, err = export(["--url", url, "--out", str(tmp_path / "a")], capsys)
    assert code == 1 and "HTTP 401" in err and "--token" in err
    code, _, err = export(["--url", url, "--token", "nope", "--out", str(tmp_path / "a")], capsys)
    assert code == 1 and "HTTP 401" in err and "nope" not in err
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = export(["--url", dead, "--token", TOKEN, "--out", str(tmp_path / "b")], capsys)
    assert code == 1 and f"cannot reach the alert service at {dead}" in err
    code, _, err = export(["--url", "ftp://x", "--out", str(tmp_path / "c")], capsys)
    assert code == 1 and "--url must be http(s)" in err
    bad = ["--url", url, "--token", TOKEN, "--since", "yesterday", "--out", str(tmp_path / "d")]
    code, _, err = export(bad, capsys)
    assert code == 1 and "HTTP 400" in err and "since" in err
    assert not (tmp_path / "a" / "annotations.json").exists()
    with pytest.raises(SystemExit):  # --reviewed is required (argparse: exit 2)
        main(["dataset", "export", "--url", url, "--out", str(tmp_path / "e")])
