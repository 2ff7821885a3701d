"""Re-record ``group4_detections.json``: the real detector's output on the shared clip.

The clip (``group4_masks.mp4``, 25 fps) is sampled at 5 fps, as an ingest node with
``fps=5`` would; each sampled frame goes through the TensorFlow detector with the
inference service's defaults (conf 0.5, IoU 0.4). The alert tests replay these recorded
detections with the clip's real frames, so they need neither TensorFlow nor the model.

    .venv/bin/python -m tests.services.alerts.data.record_group4
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from tests.fixtures.paths import SHARED_DIR

VIDEO = SHARED_DIR / "data" / "video" / "group4_masks.mp4"
OUT = Path(__file__).with_name("group4_detections.json")
STEP = 5  # 25 fps -> 5 fps


def main() -> None:
    from facemask.model.detector import create_detector

    detector = create_detector("tensorflow")
    capture = cv2.VideoCapture(str(VIDEO))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index % STEP == 0:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            height, width = rgb.shape[:2]
            dets = detector.detect([rgb])[0]
            frames.append(
                {
                    "index": index,
                    "t": round(index / fps, 3),
                    "dets": dets.to_json(width, height),
                }
            )
        index += 1
    capture.release()
    doc = {
        "video": VIDEO.name,
        "step": STEP,
        "fps": fps / STEP,
        "width": width,
        "height": height,
        "model": detector.model_version,
        "frames": frames,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
