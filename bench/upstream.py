"""The upstream per-image loop, re-implemented: the speed baseline and an independent oracle.

This follows ``tensorflow_infer.py`` of AIZOOTech/FaceMaskDetection (commit ``256dc65``)
step by step, with the same numerics, and deliberately shares no code with ``facemask.core``:

* per image: ``cv2.imread`` (BGR) -> ``cv2.cvtColor`` to RGB -> ``cv2.resize`` to 260x260
  (bilinear) -> ``/ 255.0`` (float64) -> one ``session.run`` with a batch of one on the frozen
  graph in a ``tf.compat.v1.Session`` (the feed is cast to the float32 placeholder);
* anchors generated once in numpy (float64), boxes decoded in numpy with variances
  ``[0.1, 0.1, 0.2, 0.2]``;
* score = max of the two class scores, class = argmax; class-agnostic greedy NMS in numpy
  (candidates with score > conf; IoU > iou suppresses; areas padded by 1e-3; order by
  ``np.argsort`` of the scores, the last one first);
* pixel box: ``max(0, int(x1 * W))``, ``max(0, int(y1 * H))``, ``min(int(x2 * W), W)``,
  ``min(int(y2 * H), H)``.

Threads: upstream builds its session with the default config (TensorFlow picks the core
count). The benchmarks pass explicit ``threads`` / ``inter_op_threads`` equal to the project
detector's intra-op / inter-op pools, so both run the model on the same number of threads.

``python -m bench.upstream IMAGE...`` prints the detections of each image as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

INPUT_SHAPE = (260, 260)  # (width, height) as cv2.resize takes it
FEATURE_MAP_SIZES = ((33, 33), (17, 17), (9, 9), (5, 5), (3, 3))
ANCHOR_SIZES = ((0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72))
ANCHOR_RATIOS = ((1.0, 0.62, 0.42),) * 5
VARIANCES = (0.1, 0.1, 0.2, 0.2)
INPUT_TENSOR = "data_1:0"
LOC_TENSOR = "loc_branch_concat_1/concat:0"
CLS_TENSOR = "cls_branch_concat_1/concat:0"
ID2CLASS = {0: "Mask", 1: "NoMask"}

FloatArray = npt.NDArray[np.float64]


def generate_anchors(
    feature_map_sizes: Sequence[tuple[int, int]] = FEATURE_MAP_SIZES,
    anchor_sizes: Sequence[Sequence[float]] = ANCHOR_SIZES,
    anchor_ratios: Sequence[Sequence[float]] = ANCHOR_RATIOS,
    offset: float = 0.5,
) -> FloatArray:
    """All anchors as ``[N, 4]`` float64 ``(xmin, ymin, xmax, ymax)``, normalised.

    Order: level -> row -> column -> anchor; per cell every size at the first ratio, then the
    first size at each further ratio.
    """
    per_level = []
    for level, (fw, fh) in enumerate(feature_map_sizes):
        cx = (np.linspace(0, fw - 1, fw) + offset) / fw
        cy = (np.linspace(0, fh - 1, fh) + offset) / fh
        grid_x, grid_y = np.meshgrid(cx, cy)
        centres = np.stack([grid_x, grid_y], axis=-1)  # [fh, fw, 2]
        shapes = [(s, anchor_ratios[level][0]) for s in anchor_sizes[level]]
        shapes += [(anchor_sizes[level][0], r) for r in anchor_ratios[level][1:]]
        half_extents = []
        for size, ratio in shapes:
            w = size * np.sqrt(ratio)
            h = size / np.sqrt(ratio)
            half_extents.extend([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        tiled = np.tile(centres, (1, 1, 2 * len(shapes)))  # [fh, fw, 4 * anchors]
        per_level.append((tiled + np.array(half_extents)).reshape(-1, 4))
    return np.concatenate(per_level, axis=0)


def decode_boxes(anchors: FloatArray, raw: npt.NDArray[Any]) -> FloatArray:
    """Decode ``raw`` ``[B, N, 4]`` offsets against ``anchors`` ``[B, N, 4]`` (float64 math)."""
    a_cx = (anchors[:, :, 0:1] + anchors[:, :, 2:3]) / 2
    a_cy = (anchors[:, :, 1:2] + anchors[:, :, 3:]) / 2
    a_w = anchors[:, :, 2:3] - anchors[:, :, 0:1]
    a_h = anchors[:, :, 3:] - anchors[:, :, 1:2]
    scaled = raw * np.array(VARIANCES)
    cx = scaled[:, :, 0:1] * a_w + a_cx
    cy = scaled[:, :, 1:2] * a_h + a_cy
    w = np.exp(scaled[:, :, 2:3]) * a_w
    h = np.exp(scaled[:, :, 3:]) * a_h
    return np.concatenate([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def greedy_nms(
    boxes: FloatArray, scores: npt.NDArray[Any], conf_thresh: float, iou_thresh: float
) -> npt.NDArray[np.intp]:
    """Indices (into ``boxes``) kept by class-agnostic greedy NMS, best first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.intp)
    candidates = np.where(scores > conf_thresh)[0]
    cand_boxes = boxes[candidates]
    cand_scores = scores[candidates]
    x1, y1, x2, y2 = (cand_boxes[:, k] for k in range(4))
    areas = (x2 - x1 + 1e-3) * (y2 - y1 + 1e-3)
    order = np.argsort(cand_scores)  # ascending; the best is last
    kept: list[int] = []
    while len(order) > 0:
        last = len(order) - 1
        best = order[last]
        kept.append(int(best))
        rest = order[:last]
        inter_w = np.maximum(0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]))
        inter_h = np.maximum(0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]))
        inter = inter_w * inter_h
        iou = inter / (areas[rest] + areas[best] - inter)
        drop = np.concatenate(([last], np.where(iou > iou_thresh)[0]))
        order = np.delete(order, drop)
    return candidates[np.array(kept, dtype=np.intp)]


@dataclass(frozen=True, slots=True)
class UpstreamDetection:
    """One detection as the upstream loop reports it, plus the unclipped normalised box."""

    class_id: int
    conf: float
    box_xyxy: tuple[int, int, int, int]
    box_norm: tuple[float, float, float, float]
    anchor_index: int

    def as_list(self) -> list[float | int]:
        """Upstream's ``[class_id, conf, xmin, ymin, xmax, ymax]``."""
        return [self.class_id, self.conf, *self.box_xyxy]


class UpstreamTF:
    """The frozen graph in a ``tf.compat.v1.Session`` and upstream's per-image inference."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        threads: int | None = None,
        inter_op_threads: int | None = None,
    ) -> None:
        import tensorflow as tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            graph_def = tf.compat.v1.GraphDef()
            graph_def.ParseFromString(Path(model_path).read_bytes())
            tf.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto()
        if threads is not None:  # None: TensorFlow's defaults, as upstream
            config.intra_op_parallelism_threads = threads
        if inter_op_threads is not None:
            config.inter_op_parallelism_threads = inter_op_threads
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        self._input = self.graph.get_tensor_by_name(INPUT_TENSOR)
        self._loc = self.graph.get_tensor_by_name(LOC_TENSOR)
        self._cls = self.graph.get_tensor_by_name(CLS_TENSOR)
        self.anchors = generate_anchors()
        self.anchors_exp = np.expand_dims(self.anchors, axis=0)

    def close(self) -> None:
        """Release the session."""
        self.session.close()

    def run_model(self, batch: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """One ``session.run``: raw ``(loc, cls)`` for a ``[B, 260, 260, 3]`` batch."""
        loc, cls = self.session.run([self._loc, self._cls], feed_dict={self._input: batch})
        return loc, cls

    def inference(
        self, image: npt.NDArray[Any], conf_thresh: float = 0.5, iou_thresh: float = 0.4
    ) -> list[UpstreamDetection]:
        """Upstream ``inference()`` on one RGB image (no drawing)."""
        height, width = image.shape[:2]
        resized = cv2.resize(image, INPUT_SHAPE)
        normalised = resized / 255.0
        loc, cls = self.run_model(np.expand_dims(normalised, axis=0))
        boxes = decode_boxes(self.anchors_exp, loc)[0]
        scores = cls[0]
        max_scores = np.max(scores, axis=1)
        max_classes = np.argmax(scores, axis=1)
        keep = greedy_nms(boxes, max_scores, conf_thresh, iou_thresh)
        out = []
        for idx in keep:
            x1, y1, x2, y2 = boxes[idx]
            out.append(
                UpstreamDetection(
                    class_id=int(max_classes[idx]),
                    conf=float(max_scores[idx]),
                    box_xyxy=(
                        max(0, int(x1 * width)),
                        max(0, int(y1 * height)),
                        min(int(x2 * width), width),
                        min(int(y2 * height), height),
                    ),
                    box_norm=(float(x1), float(y1), float(x2), float(y2)),
                    anchor_index=int(idx),
                )
            )
        return out

    def detect_file(
        self, path: str | Path, conf_thresh: float = 0.5, iou_thresh: float = 0.4
    ) -> list[UpstreamDetection]:
        """``cv2.imread`` -> RGB -> :meth:`inference`, as upstream's image mode."""
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise OSError(f"cannot read image {path}")
        return self.inference(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), conf_thresh, iou_thresh)

    def detect_jpeg(
        self, data: bytes, conf_thresh: float = 0.5, iou_thresh: float = 0.4
    ) -> list[UpstreamDetection]:
        """Same as :meth:`detect_file` from encoded bytes (``cv2.imdecode``, full size)."""
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError("cannot decode image bytes")
        return self.inference(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), conf_thresh, iou_thresh)


def default_model_path() -> Path:
    """The cached frozen graph (``facemask models fetch``)."""
    from facemask.model import store as modelstore

    return modelstore.artifact_path("face_mask_detection.pb")


def main(argv: Sequence[str] | None = None) -> int:
    """Print upstream's detections of each image as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--conf", type=float, default=0.5)
    parser.add_argument("--iou", type=float, default=0.4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    upstream = UpstreamTF(args.model or default_model_path(), threads=args.threads)
    try:
        for path in args.images:
            dets = upstream.detect_file(path, args.conf, args.iou)
            line = {"image": str(path), "detections": [d.as_list() for d in dets]}
            sys.stdout.write(json.dumps(line) + "\n")
    finally:
        upstream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
