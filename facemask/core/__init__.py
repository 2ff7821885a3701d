"""Layer 1, the pure numeric core: anchors, box decoding, NMS, tiling, image decode with
limits and pre-processing, the detection type, drawing, and the discovery of plugins
(config classes of the model runtimes and alert sinks).

It imports nothing of the project above it and no TensorFlow; an ingest node or a test
can use it without the model.
"""

from __future__ import annotations

from facemask.core.anchors import NUM_ANCHORS, generate_anchors
from facemask.core.boxes import decode_boxes
from facemask.core.nms import nms, postprocess
from facemask.core.preprocess import (
    INPUT_SIZE,
    DecodedImage,
    ImageDecodeError,
    decode_image,
    jpeg_size,
    png_size,
    preprocess,
    preprocess_batch,
)
from facemask.core.types import LABELS, Detections

__all__ = [
    "INPUT_SIZE",
    "LABELS",
    "NUM_ANCHORS",
    "DecodedImage",
    "Detections",
    "ImageDecodeError",
    "decode_boxes",
    "decode_image",
    "generate_anchors",
    "jpeg_size",
    "nms",
    "png_size",
    "postprocess",
    "preprocess",
    "preprocess_batch",
]
