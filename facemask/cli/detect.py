"""``facemask detect``: detect masked / unmasked faces in images, videos, directories,
cameras and network streams.

Prints one JSON object per image or video frame on stdout::

    {"source": "img/a.jpg", "frame": null, "width": 640, "height": 480,
     "detections": [{"label": "mask", "score": 0.93, "box": [x1, y1, x2, y2]}]}

``frame`` is null for still images and the 0-based frame index for videos and streams.
What can be read, and how ``--annotate`` mirrors it, is :mod:`facemask.cli.media`: every
argument is checked before the model is loaded, so a typo fails at once. An input that
cannot be read gets one error line on stderr; the others are still processed and the exit
code is 1 (130 after Ctrl-C, which still finishes the annotated videos and the summary).

On a terminal, a progress bar on stderr counts the images and frames whose detections are
*done* (with ``--server``: answered by the service), with the rate and, when the total is
known, the time left; ``--progress`` / ``--no-progress`` force it on or off. A summary line
on stderr ends every run: items, faces by label, time, rate, failures.

Detection goes through a *backend* (the local detector, or a remote inference service
with ``--server``), so reading inputs and writing results do not depend on where the
model runs.

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
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import cv2

from facemask.cli.media import (
    AnnotatedWriter,
    ErrorHandler,
    InputImage,
    Inputs,
    iter_inputs,
    plan_outputs,
    resolve_inputs,
)
from facemask.cli.progress import Progress, progress_enabled
from facemask.cli.runtime_args import (
    add_runtime_arguments,
    positive_int,
    runtime_options,
)
from facemask.core.capture import quiet_video_logs
from facemask.core.preprocess import DECODE_MODES
from facemask.core.tiling import TileSpec, TileSpecError, parse_tiles
from facemask.core.types import LABELS, Detections
from facemask.model.store import ModelStoreError

if TYPE_CHECKING:  # gRPC is imported for --server only
    from facemask.infra.client import ClientTLS

__all__ = ["Backend", "InputImage", "LocalBackend", "RemoteBackend", "detect_inputs", "run"]

DEFAULT_BATCH_SIZE = 32
MAX_CHUNK_BYTES = 256 << 20
"""Decoded pixels sent to the backend in one chunk (at least one image)."""
MAX_BUFFER_BYTES = 256 << 20
"""Decoded pixels read ahead while the model runs (at least one image)."""


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
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="SOURCE",
        help="image (JPEG, PNG, BMP, WebP), video file, directory (searched recursively), "
        "camera index or device (0, /dev/video0), or stream URL (rtsp://, http(s):// MJPEG...)",
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--glob",
        metavar="PATTERN",
        help="in directories, read only the files whose name matches PATTERN (or, with a /, "
        "whose path below the directory does), case-insensitively: '*.jpg', 'cam1/*' "
        "(default: every image and video file)",
    )
    inputs.add_argument(
        "--recursive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="search directories recursively (default %(default)s)",
    )
    inputs.add_argument(
        "--decode",
        choices=DECODE_MODES,
        default="full",
        help="full: decode images at full size (reference-exact); auto: let libjpeg "
        "decode large JPEGs at 1/2..1/8 scale (faster, nearly identical results) "
        "(default %(default)s)",
    )
    inputs.add_argument(
        "--max-frames",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop each video, camera or stream after N frames (default: to its end)",
    )
    inputs.add_argument(
        "--duration",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="stop each video after SECONDS of video, each camera or stream after SECONDS of "
        "reading (default: to its end; a camera or stream: until Ctrl-C)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--conf", type=_fraction, default=0.5, help="score threshold, > conf (default %(default)s)"
    )
    model.add_argument(
        "--iou", type=_fraction, default=0.4, help="NMS IoU threshold (default %(default)s)"
    )
    model.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="images per model run (default %(default)s)",
    )
    model.add_argument(
        "--tiles",
        type=_tile_spec,
        default=None,
        metavar="SPEC",
        help="tiled inference for small faces: ROWSxCOLS[:OVERLAP] (e.g. 2x2: the full frame "
        "plus 2x2 overlapping tiles, 5 model runs per image), auto[:MIN_FACE_PX] or off "
        "(default: off; with --server: the server's setting)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="also write each input with its faces drawn under DIR, mirroring the input "
        "paths: images in their format, videos, cameras and streams as MP4",
    )
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar of finished images and frames on stderr (default: on when stderr "
        "is a terminal)",
    )
    add_runtime_arguments(parser)
    remote = parser.add_argument_group(
        "remote inference (TLS defaults: FACEMASK_GRPC_TLS_CA, _CERT, _KEY, _SERVER_NAME)"
    )
    remote.add_argument(
        "--server", metavar="HOST:PORT", help="send the images to a running inference service"
    )
    remote.add_argument("--tls-ca", metavar="PEM", help="CA of the server certificate: use TLS")
    remote.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    remote.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert")
    remote.add_argument("--tls-server-name", metavar="NAME", help="name in the server certificate")


def run(args: argparse.Namespace, *, backend: Backend | None = None) -> int:
    """Detect on every input; 0 if all inputs were read, 1 if any failed, 2 on bad usage,
    130 when interrupted. ``backend`` (owned by the caller, not closed) replaces the one the
    options describe."""
    stderr = sys.stderr
    failed: list[str] = []

    def report(source: str, message: str) -> None:
        failed.append(source)
        stderr.write(f"facemask detect: error: {source}: {message}\n")
        stderr.flush()

    # Everything about the inputs is checked before the model is loaded (seconds).
    quiet_video_logs()
    inputs = resolve_inputs(
        args.paths, glob=args.glob, recursive=args.recursive, skip=args.annotate
    )
    try:
        for source, message in inputs.errors:
            report(source, message)
        if not inputs.items:
            stderr.write("facemask detect: error: nothing to detect\n")
            return 1
        annotate: Path | None = args.annotate
        if annotate is not None:
            plan_outputs(inputs)
            try:
                annotate.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                stderr.write(f"facemask detect: error: {annotate}: {exc.strerror or exc}\n")
                return 1
        owned = backend is None
        if backend is None:
            try:
                backend = make_backend(args)
            except (ModelStoreError, ImportError) as exc:
                stderr.write(f"facemask detect: error: cannot load the model: {exc}\n")
                return 1
            except ValueError as exc:
                stderr.write(f"facemask detect: error: {exc}\n")
                return 2
        total = inputs.total(args.max_frames, args.duration)
        progress = Progress(
            total,
            enabled=progress_enabled(args.progress, stderr),
            stream=stderr,
            desc="detect",
            unit="frame" if any(i.kind != "image" for i in inputs.items) else "img",
        )

        def on_error(source: str, message: str) -> None:
            failed.append(source)
            progress.write(f"facemask detect: error: {source}: {message}")

        try:
            summary = detect_inputs(
                backend,
                inputs,
                conf=args.conf,
                iou=args.iou,
                batch_size=args.batch_size,
                decode=args.decode,
                max_frames=args.max_frames,
                duration=args.duration,
                annotate=annotate,
                progress=progress,
                on_error=on_error,
            )
        except BackendError as exc:
            stderr.write(f"facemask detect: error: {exc}\n")
            return 1
        finally:
            if owned:
                backend.close()
        summary.failed = len(failed)
        stderr.write(summary.line() + "\n")
        stderr.flush()
    finally:
        inputs.close()
    if summary.interrupted:
        return 130
    return 1 if failed else 0


@dataclass(slots=True)
class Summary:
    """What a run did: images and frames finished, faces by label, time, failures."""

    images: int = 0
    frames: int = 0
    faces: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    elapsed: float = 0.0
    failed: int = 0
    interrupted: bool = False

    @property
    def items(self) -> int:
        """Images and frames finished."""
        return self.images + self.frames

    def add(self, image: InputImage, detections: Detections) -> None:
        """Count one finished image or frame."""
        if image.frame is None:
            self.images += 1
        else:
            self.frames += 1
        for class_id in detections.class_ids:
            self.faces[LABELS[int(class_id)]] += 1

    def line(self) -> str:
        """``facemask detect: 3 images, 50 frames in 5.4 s (9.8/s); 131 faces: 120 mask,
        11 no_mask; 1 failed``."""
        counts = []
        if self.images or not self.frames:
            counts.append(_plural(self.images, "image"))
        if self.frames:
            counts.append(_plural(self.frames, "frame"))
        rate = self.items / self.elapsed if self.elapsed > 0 else 0.0
        faces = sum(self.faces.values())
        by_label = ", ".join(f"{n} {label}" for label, n in self.faces.items())
        text = (
            f"facemask detect: {', '.join(counts)} in {self.elapsed:.1f} s ({rate:.1f}/s); "
            f"{_plural(faces, 'face')}: {by_label}; {self.failed} failed"
        )
        return text + ("; interrupted" if self.interrupted else "")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def detect_inputs(
    backend: Backend,
    inputs: Inputs,
    *,
    conf: float,
    iou: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode: str = "full",
    max_frames: int | None = None,
    duration: float | None = None,
    annotate: Path | None = None,
    progress: Progress,
    on_error: ErrorHandler,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Summary:
    """Run ``backend`` over ``inputs``: one JSON line per result on ``out`` (stdout), the
    drawn results under ``annotate``, ``progress`` advanced per *finished* result (its total
    corrected when an input gives fewer or more frames than expected). Returns the summary
    (``interrupted`` after Ctrl-C, which stops reading and finishes the MP4 files);
    :class:`BackendError` propagates."""
    out = out if out is not None else sys.stdout
    same_screen = progress.enabled and _isatty(out)
    expected = [item.expected(max_frames, duration) for item in inputs.items]
    summary = Summary()

    def ended(index: int, count: int) -> None:
        planned = expected[index]
        if planned is not None:
            progress.correct_total(count - planned)

    writer = AnnotatedWriter(annotate, inputs, on_error) if annotate is not None else None
    reading = iter_inputs(
        inputs,
        decode=decode,
        max_frames=max_frames,
        duration=duration,
        on_error=on_error,
        on_end=ended,
        clock=clock,
    )
    images = _prefetch(reading, depth=2 * batch_size)
    try:
        for results in detect_chunks(backend, images, conf=conf, iou=iou, batch_size=batch_size):
            text = "\n".join(json.dumps(result_json(*result)) for result in results)
            if same_screen:
                progress.write(text, out)
            else:
                out.write(text + "\n")
                out.flush()  # stream results while a long video is still running
            for image, detections in results:
                if writer is not None:
                    writer.write(image, detections)
                summary.add(image, detections)
            progress.advance(len(results))  # finished: the backend answered
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        images.close()  # stops the reader thread
        if writer is not None:
            writer.close()
        summary.elapsed = progress.elapsed
        progress.close()
    return summary


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


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
        if getattr(args, "model", None) is not None:
            raise ValueError(
                "--model chooses a local model; the service at --server runs the cluster's "
                "(`facemask models promote` changes it)"
            )
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
    for chunk in detect_chunks(
        backend, images, conf=conf, iou=iou, batch_size=batch_size, max_chunk_bytes=max_chunk_bytes
    ):
        yield from chunk


def detect_chunks(
    backend: Backend,
    images: Iterable[InputImage],
    *,
    conf: float,
    iou: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
) -> Iterator[list[tuple[InputImage, Detections]]]:
    """:func:`detect_images`, one list per backend call (the results that came back
    together)."""

    def run(chunk: list[InputImage]) -> list[tuple[InputImage, Detections]]:
        return list(zip(chunk, backend.detect(chunk, conf=conf, iou=iou), strict=True))

    chunk: list[InputImage] = []
    nbytes = 0
    for image in images:
        if chunk and nbytes + image.rgb.nbytes > max_chunk_bytes:
            yield run(chunk)
            chunk, nbytes = [], 0
        chunk.append(image)
        nbytes += image.rgb.nbytes
        if len(chunk) >= batch_size:
            yield run(chunk)
            chunk, nbytes = [], 0
    if chunk:
        yield run(chunk)


def result_json(image: InputImage, detections: Detections) -> dict[str, Any]:
    """The output object of one image or frame."""
    return {
        "source": image.source,
        "frame": image.frame,
        "width": image.width,
        "height": image.height,
        "detections": detections.to_json(image.width, image.height),
    }


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


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value
