"""``facemask detect``: detect masked / unmasked faces in images, directories and videos.

Prints one JSON object per image or video frame on stdout::

    {"source": "img/a.jpg", "frame": null, "width": 640, "height": 480,
     "detections": [{"label": "mask", "score": 0.93, "box": [x1, y1, x2, y2]}]}

``frame`` is null for still images and the 0-based frame index for videos. A file that
cannot be read gets one error line on stderr; the others are still processed and the exit
code is 1. Detection goes through a *backend* (the local detector, or a remote inference
service with ``--server``), so reading inputs and writing results do not depend on where
the model runs.

Memory is bounded whatever the inputs: a file's size header is judged before the file is
read whole or decoded (:func:`~facemask.core.preprocess.read_image_file`: the one pixel
limit), and the decoded pixels held at once, read ahead or waiting for the model, are at
most :data:`MAX_BUFFER_BYTES` and :data:`MAX_CHUNK_BYTES` (a chunk is cut early when its
images are large; results do not depend on the chunking).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from facemask.cli.runtime_args import (
    add_runtime_arguments,
    positive_int,
    runtime_options,
)
from facemask.core.preprocess import (
    DECODE_MODES,
    ImageDecodeError,
    decode_image,
    read_image_file,
)
from facemask.core.tiling import TileSpec, TileSpecError, parse_tiles
from facemask.core.types import Detections
from facemask.model.store import ModelStoreError

if TYPE_CHECKING:  # gRPC is imported for --server only
    from facemask.infra.client import ClientTLS

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
DEFAULT_BATCH_SIZE = 32
MAX_CHUNK_BYTES = 256 << 20
"""Decoded pixels sent to the backend in one chunk (at least one image)."""
MAX_BUFFER_BYTES = 256 << 20
"""Decoded pixels read ahead while the model runs (at least one image)."""

ErrorHandler = Callable[[str, str], None]


@dataclass(slots=True)
class InputImage:
    """One still image or video frame to run detection on (RGB uint8)."""

    source: str
    frame: int | None
    rgb: np.ndarray
    width: int
    height: int


class Backend(Protocol):
    """Where detection runs: the local detector, or a remote inference service (``--server``)."""

    def detect(self, images: Sequence[InputImage], *, conf: float, iou: float) -> list[Detections]:
        """Detections of each image, in order."""
        ...

    def close(self) -> None:
        """Release the backend."""
        ...


class LocalBackend:
    """Runs a :class:`facemask.model.detector.Detector` in this process."""

    def __init__(
        self,
        detector: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        tiles: TileSpec | None = None,
    ) -> None:
        self.detector = detector
        self.batch_size = batch_size
        self.tiles = tiles

    def detect(self, images: Sequence[InputImage], *, conf: float, iou: float) -> list[Detections]:
        """Batched local inference (tiled when the backend has a tile spec)."""
        result: list[Detections] = self.detector.detect(
            [image.rgb for image in images],
            conf=conf,
            iou=iou,
            batch_size=self.batch_size,
            tiles=self.tiles,
            sizes=[(image.width, image.height) for image in images],
        )
        return result

    def close(self) -> None:
        """Release the detector's runtime."""
        self.detector.close()


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``detect`` options."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image, directory or video")
    parser.add_argument("--conf", type=_fraction, default=0.5, help="score threshold (> conf)")
    parser.add_argument("--iou", type=_fraction, default=0.4, help="NMS IoU threshold")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per model run (default {DEFAULT_BATCH_SIZE})",
    )
    add_runtime_arguments(parser)
    parser.add_argument(
        "--decode",
        choices=DECODE_MODES,
        default="full",
        help="full: decode images at full size (reference-exact, default); auto: let libjpeg "
        "decode large JPEGs at 1/2..1/8 scale (faster, nearly identical results)",
    )
    parser.add_argument(
        "--max-frames", type=positive_int, default=None, help="stop each video after N frames"
    )
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write annotated images here")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar for videos on stderr"
    )
    parser.add_argument(
        "--server", metavar="HOST:PORT", help="send the images to a running inference service"
    )
    tls = parser.add_argument_group(
        "TLS to --server (defaults: FACEMASK_GRPC_TLS_CA, _CERT, _KEY, _SERVER_NAME)"
    )
    tls.add_argument("--tls-ca", metavar="PEM", help="CA of the server certificate: use TLS")
    tls.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    tls.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert")
    tls.add_argument("--tls-server-name", metavar="NAME", help="name in the server certificate")
    parser.add_argument(
        "--tiles",
        type=_tile_spec,
        default=None,
        metavar="SPEC",
        help="tiled inference for small faces: ROWSxCOLS[:OVERLAP] (e.g. 2x2: the full frame "
        "plus 2x2 overlapping tiles, 5 model runs per image), auto[:MIN_FACE_PX] or off "
        "(default: off; with --server: the server's setting)",
    )


def run(args: argparse.Namespace) -> int:
    """Detect on every input; 0 if all inputs were read, 1 if any failed, 2 on bad usage."""
    errors: list[str] = []

    def on_error(source: str, message: str) -> None:
        errors.append(source)
        sys.stderr.write(f"facemask detect: error: {source}: {message}\n")
        sys.stderr.flush()

    try:
        backend = make_backend(args)
    except (ModelStoreError, ImportError) as exc:
        sys.stderr.write(f"facemask detect: error: cannot load the model: {exc}\n")
        return 1
    except ValueError as exc:
        sys.stderr.write(f"facemask detect: error: {exc}\n")
        return 2
    if args.annotate is not None:
        args.annotate.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    count = 0
    images = _prefetch(
        iter_inputs(
            [Path(p) for p in args.paths],
            decode=args.decode,
            max_frames=args.max_frames,
            progress=not args.no_progress,
            on_error=on_error,
        ),
        depth=2 * args.batch_size,
    )
    try:
        for image, detections in detect_images(
            backend, images, conf=args.conf, iou=args.iou, batch_size=args.batch_size
        ):
            sys.stdout.write(json.dumps(result_json(image, detections)) + "\n")
            sys.stdout.flush()  # stream results while a long video is still running
            if args.annotate is not None:
                _write_annotated(args.annotate, image, detections, on_error)
            count += 1
    except BackendError as exc:
        sys.stderr.write(f"facemask detect: error: {exc}\n")
        return 1
    finally:
        images.close()  # stops the reader thread
        backend.close()
    elapsed = time.perf_counter() - started
    logger.info(
        "%d images in %.1f s (%.1f images/s)%s",
        count,
        elapsed,
        count / elapsed if elapsed > 0 else 0.0,
        f", {len(errors)} failed" if errors else "",
    )
    return 1 if errors else 0


class BackendError(RuntimeError):
    """The backend cannot run detection (for example the server is unreachable)."""


class RemoteBackend:
    """Sends the images to a running inference service (``--server HOST:PORT``).

    Images travel as lossless PNG of the decoded pixels, so the server sees exactly what a
    local run would and the results are identical.
    """

    def __init__(
        self,
        target: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        tiles: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        from facemask.infra.client import RemoteDetector

        self.remote = RemoteDetector(target, timeout=120.0, tls=tls)
        self.batch_size = batch_size
        self.tiles = tiles

    def detect(self, images: Sequence[InputImage], *, conf: float, iou: float) -> list[Detections]:
        """One request per chunk of ``batch_size`` images."""
        import grpc  # on demand: local runs need no gRPC

        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            blobs = [
                cv2.imencode(
                    ".png",
                    cv2.cvtColor(image.rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_PNG_COMPRESSION, 1],
                )[1].tobytes()
                for image in images[start : start + self.batch_size]
            ]
            out.extend(self._detect_blobs(grpc, blobs, conf, iou))
        return out

    def _detect_blobs(self, grpc: Any, blobs: list[bytes], conf: float, iou: float) -> list[Any]:
        """One request; halved while the service answers RESOURCE_EXHAUSTED (its queue
        counts model inputs, tiles included: a large tiled request may never fit whole)."""
        try:
            results = self.remote.detect_encoded(blobs, conf=conf, iou=iou, tiles=self.tiles)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and len(blobs) > 1:
                half = len(blobs) // 2
                return self._detect_blobs(grpc, blobs[:half], conf, iou) + self._detect_blobs(
                    grpc, blobs[half:], conf, iou
                )
            raise BackendError(
                f"inference service {self.remote.target}: {exc.code().name}: {exc.details()}"
            ) from None
        return [r.detections for r in results]

    def close(self) -> None:
        """Close the channel."""
        self.remote.close()


def client_tls(args: argparse.Namespace) -> ClientTLS | None:
    """TLS to ``--server`` from the ``--tls-*`` options over ``FACEMASK_GRPC_TLS_*``;
    None (plaintext) when neither sets any. Raises ``ValueError`` (TLSConfigError)."""
    from facemask.infra.client import ClientTLS

    env = ClientTLS.from_env() or ClientTLS()
    values = {
        name: getattr(args, f"tls_{name}", None) or getattr(env, name)
        for name in ("ca", "cert", "key", "server_name")
    }
    if not any(values.values()):
        return None
    return ClientTLS(**values)  # its files are read when the channel opens, before any image


def make_backend(args: argparse.Namespace) -> Backend:
    """The backend the options ask for: a remote service (``--server``) or a local model."""
    tiles_text: str | None = getattr(args, "tiles", None)
    if args.server:
        return RemoteBackend(
            args.server, batch_size=args.batch_size, tiles=tiles_text, tls=client_tls(args)
        )
    from facemask.model.detector import create_detector

    options = runtime_options(args)
    detector = create_detector(args.runtime, conf=args.conf, iou=args.iou, **options)
    return LocalBackend(detector, batch_size=args.batch_size, tiles=parse_tiles(tiles_text))


def detect_images(
    backend: Backend,
    images: Iterable[InputImage],
    *,
    conf: float,
    iou: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
) -> Iterator[tuple[InputImage, Detections]]:
    """Run ``backend`` on ``images`` in chunks of ``batch_size`` images and at most
    ``max_chunk_bytes`` of pixels (one image at least); yield results in order."""

    def run(chunk: list[InputImage]) -> Iterator[tuple[InputImage, Detections]]:
        return zip(chunk, backend.detect(chunk, conf=conf, iou=iou), strict=True)

    chunk: list[InputImage] = []
    nbytes = 0
    for image in images:
        if chunk and nbytes + image.rgb.nbytes > max_chunk_bytes:
            yield from run(chunk)
            chunk, nbytes = [], 0
        chunk.append(image)
        nbytes += image.rgb.nbytes
        if len(chunk) >= batch_size:
            yield from run(chunk)
            chunk, nbytes = [], 0
    if chunk:
        yield from run(chunk)


def result_json(image: InputImage, detections: Detections) -> dict[str, Any]:
    """The output object of one image or frame."""
    return {
        "source": image.source,
        "frame": image.frame,
        "width": image.width,
        "height": image.height,
        "detections": detections.to_json(image.width, image.height),
    }


def iter_inputs(
    paths: Sequence[Path],
    *,
    decode: str = "full",
    max_frames: int | None = None,
    progress: bool = True,
    on_error: ErrorHandler,
) -> Iterator[InputImage]:
    """Every image and video frame of ``paths`` in order (directories: their images, sorted).

    Unreadable inputs are reported through ``on_error(source, message)`` and skipped.
    """
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                on_error(str(path), "no images in this directory")
            for file in files:
                yield from _read_image(file, decode, on_error)
        elif not path.exists():
            on_error(str(path), "no such file or directory")
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            yield from _read_video(path, max_frames, progress, on_error)
        else:
            yield from _read_image(path, decode, on_error)


def _read_image(path: Path, decode: str, on_error: ErrorHandler) -> Iterator[InputImage]:
    try:  # the header is judged before the file is read whole and before any decode
        decoded = decode_image(read_image_file(path), reduce=decode)
    except OSError as exc:
        on_error(str(path), f"cannot read: {exc.strerror or exc}")
        return
    except ImageDecodeError as exc:
        on_error(str(path), f"not a readable image ({exc})")
        return
    yield InputImage(str(path), None, decoded.rgb, decoded.width, decoded.height)


def _read_video(
    path: Path, max_frames: int | None, progress: bool, on_error: ErrorHandler
) -> Iterator[InputImage]:
    from tqdm import tqdm

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            on_error(str(path), "cannot open this video")
            return
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        if total is not None and max_frames is not None:
            total = min(total, max_frames)
        with tqdm(
            total=total, desc=path.name, unit="frame", file=sys.stderr, disable=not progress
        ) as bar:
            index = 0
            while max_frames is None or index < max_frames:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    break
                height, width = bgr.shape[:2]
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield InputImage(str(path), index, rgb, width, height)
                index += 1
                bar.update(1)
        if index == 0:
            on_error(str(path), "no frames could be decoded from this video")
    finally:
        capture.release()


def _write_annotated(
    directory: Path, image: InputImage, detections: Detections, on_error: ErrorHandler
) -> None:
    from facemask.core.annotate import annotate

    source = Path(image.source)
    if image.frame is None:
        name = source.name if source.suffix.lower() in IMAGE_SUFFIXES else f"{source.name}.png"
    else:
        name = f"{source.stem}_{image.frame:06d}.jpg"
    drawn = annotate(image.rgb, detections)
    target = directory / name
    if not cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
        on_error(str(target), "cannot write the annotated image")


_END = object()


def _prefetch(
    items: Iterator[InputImage], *, depth: int, max_bytes: int = MAX_BUFFER_BYTES
) -> Generator[InputImage, None, None]:
    """Read and decode the next inputs on a thread while the model runs (both release the
    GIL), at most ``depth`` images and ``max_bytes`` of pixels ahead (one image at least);
    exceptions are re-raised in the consumer."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    room = threading.Condition()
    held = [0]  # pixel bytes buffered

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                size = item.rgb.nbytes
                with room:
                    room.wait_for(
                        lambda size=size: (  # type: ignore[misc]
                            stop.is_set() or held[0] == 0 or held[0] + size <= max_bytes
                        )
                    )
                    held[0] += size
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # re-raised in the consumer
            buffer.put(_Failure(exc))
        finally:
            buffer.put(_END)

    worker = threading.Thread(target=produce, name="detect-reader", daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.exc
            with room:
                held[0] -= item.rgb.nbytes
                room.notify_all()
            yield item
    finally:
        stop.set()
        with room:
            room.notify_all()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                buffer.get(timeout=0.05)
        worker.join()


@dataclass(slots=True)
class _Failure:
    exc: BaseException


def _tile_spec(text: str) -> str:
    """Validate a ``--tiles`` spec; kept as text so a remote server parses it too."""
    try:
        TileSpec.parse(text)
    except TileSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value
