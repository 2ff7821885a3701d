"""``facemask eval``: COCO AP of the detector on an annotated image set.

Runs the detector at a low confidence threshold (0.01 by default, as COCO evaluation wants
the whole precision/recall curve) and scores with pycocotools. ``--json`` prints one JSON
object on one line; otherwise a table. On a terminal a progress bar on stderr counts the
images whose detections are done (after each model batch, so ``--batch-size`` sets its
step; with ``--tiles`` a batch is the images whose tiles fill it) with the rate and ETA,
then shows the scoring; one summary line is logged at the end. TensorFlow is imported
inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from facemask.cli.progress import add_progress_argument, progress, progress_enabled
from facemask.cli.runtime_args import (
    add_runtime_arguments,
    positive_int,
    runtime_options,
)
from facemask.core.tiling import TileSpec, TileSpecError
from facemask.model import evaluation
from facemask.model import store as modelstore

logger = logging.getLogger(__name__)


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return value


def _tile_spec(text: str) -> TileSpec | None:
    try:
        return TileSpec.parse(text)
    except TileSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` options."""
    parser.add_argument(
        "--annotations", required=True, help="COCO annotation file (images, annotations)"
    )
    parser.add_argument("--images", required=True, help="directory holding the image files")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--conf",
        type=_unit_float,
        default=evaluation.DEFAULT_CONF,
        help="score threshold of the detector (default %(default)s)",
    )
    parser.add_argument(
        "--iou",
        type=_unit_float,
        default=evaluation.DEFAULT_IOU,
        help="NMS IoU threshold (default %(default)s)",
    )
    parser.add_argument(
        "--unrounded",
        action="store_true",
        help="score float boxes clipped to the image instead of the integer boxes `detect` prints",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=evaluation.DEFAULT_BATCH_SIZE,
        help="images per model call (default %(default)s)",
    )
    add_runtime_arguments(parser)
    parser.add_argument(
        "--tiles",
        type=_tile_spec,
        default=None,
        metavar="SPEC",
        help="tiled inference: ROWSxCOLS[:OVERLAP] (e.g. 2x2), auto[:MIN_FACE_PX] or off "
        "(default off: exactly the reference)",
    )
    parser.add_argument(
        "--decode",
        choices=evaluation.DECODE_MODES,
        default="full",
        help="full: decode every image at full size (exactly the reference); auto: let large "
        "JPEGs decode at a reduced scale (default %(default)s)",
    )
    add_progress_argument(parser, "images")


def run(args: argparse.Namespace) -> int:
    """Evaluate; one clear error line on stderr and exit 1 on bad inputs."""
    try:
        coco = evaluation.load_annotations(args.annotations)
        # fail on missing files before TensorFlow loads
        total = len(evaluation.ground_truth_images(coco, args.images))
        try:
            options = runtime_options(args)
        except ValueError as exc:
            raise evaluation.EvaluationError(str(exc)) from None
        detector = evaluation.get_detector(args.runtime, **options)
        with progress(
            total, unit="image", desc="eval", enabled=progress_enabled(args.progress)
        ) as bar:

            def on_progress(done: int, of: int) -> None:
                bar.update(done, of)
                if done == of:
                    bar.stage("eval (scoring)")

            result = evaluation.evaluate(
                coco,
                args.images,
                detector=detector,
                conf=args.conf,
                iou=args.iou,
                unrounded=args.unrounded,
                batch_size=args.batch_size,
                decode=args.decode,
                progress=on_progress,
                tiles=args.tiles,
            )
        logger.info(bar.summary(detections=result.detections, AP50=round(result.ap50, 3)))
    except (evaluation.EvaluationError, modelstore.ModelStoreError) as exc:
        sys.stderr.write(f"facemask eval: error: {exc}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        sys.stdout.write(evaluation.format_table(result))
    sys.stdout.flush()
    return 0
