"""Image decoding and model-input preparation (pure numpy + OpenCV, no TensorFlow).

The model input is the whole frame resized to 260x260 with ``cv2.resize`` (bilinear, no
letterbox), RGB, float32 in ``[0, 1]``: exactly the upstream reference, bit for bit.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

INPUT_SIZE: tuple[int, int] = (260, 260)
"""Model input (width, height)."""

MAX_PIXELS = 64_000_000
"""The one pixel limit of every image the project decodes (stream frames, gRPC images,
snapshots, CLI inputs); a service may configure a lower one, never a higher one."""
DECODE_MODES = ("full", "auto")
IMAGE_FORMATS = ("jpeg", "png", "bmp", "webp")
"""Every format whose size header the project reads before a decode (so a small file that
claims 16000x16000 pixels is refused, not decoded into gigabytes)."""
STREAM_FORMATS = ("jpeg", "png")
"""The formats taken by default: what cameras, the stream wire format and gRPC carry. The
command line opts into all of :data:`IMAGE_FORMATS` for files on disk."""
_FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WebP"}

_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BMP_SIGNATURE = b"BM"
_WEBP_VP8_START = b"\x9d\x01\x2a"
_WEBP_VP8L_SIGNATURE = 0x2F
# Start-of-frame markers (baseline, progressive, lossless, arithmetic...): not DHT (C4),
# JPG (C8) or DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone (no length field): TEM, RSTn, SOI, EOI.
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS = 0xDA
_REDUCED_FLAGS = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# The reference divides a float64 array by 255.0 and TensorFlow casts the feed to float32.
# A float32 division of the (exact) float32 value by 255 gives the same bits for each of
# the 256 values (tests/facemask/core/test_preprocess.py checks all of them), several
# times faster than a table lookup and without a float64 temporary.
_SCALE = np.float32(255.0)


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image.

    ``reason`` is one of ``empty_image``, ``corrupt_image`` (no readable size header, or
    OpenCV cannot decode it), ``too_large`` (over the pixel limit, judged on the header),
    ``size_mismatch`` (not the size its sender declared, judged on the header first) and
    ``unsupported_format`` (not one of the formats the caller takes - JPEG and PNG unless it
    asks for more of :data:`IMAGE_FORMATS`: other formats are refused, not sniffed) (for
    metrics and dead-letter entries).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An RGB uint8 ``[h, w, 3]`` image (BGR when decoded with ``bgr=True``) and the size
    of the *original* image.

    With reduced-scale JPEG decoding ``rgb`` is smaller than ``width`` x ``height``; the
    detections are normalised, so they map onto the original size unchanged.
    """

    rgb: np.ndarray
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class JpegHeader:
    """What a JPEG's marker segments declare before its scan: the size and sample precision
    of its first start-of-frame, its colour components, and whether it carries EXIF."""

    width: int
    height: int
    precision: int
    components: int
    exif: bool

    @property
    def turbo_decodable(self) -> bool:
        """Whether libjpeg-turbo's TurboJPEG API (simplejpeg) decodes it to exactly
        OpenCV's pixels: 8-bit greyscale or YCbCr, and no EXIF (OpenCV turns an image by
        its EXIF orientation; TurboJPEG does not)."""
        return self.precision == 8 and self.components in (1, 3) and not self.exif


_TURBO_MIN_SIDE = 8
"""Smaller JPEGs go to OpenCV: below 8 px a side, TurboJPEG may pick a 3/8 scale where
1/2 was asked for (same size, other pixels)."""
_EXIF_ID = b"Exif\x00\x00"
_APP1 = 0xE1


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The :class:`JpegHeader` of a JPEG, or None if no start-of-frame is found.

    Walks the marker segments from SOI up to the scan (SOS) or the end of the data
    without decoding anything. A height of 0 (defined later by a DNL marker) counts as not
    found, as does a truncated frame header.
    """
    view = memoryview(data)
    if bytes(view[:2]) != _JPEG_SOI:
        return None
    pos, end = 2, len(view)
    frame: tuple[int, int, int, int] | None = None
    exif = False
    while pos < end:
        if view[pos] != 0xFF:
            break
        while pos < end and view[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = view[pos]
        pos += 1
        if marker in _STANDALONE_MARKERS:
            continue
        if marker == _SOS or pos + 2 > end:
            break
        (length,) = struct.unpack_from(">H", view, pos)
        if length < 2:
            break
        if marker in _SOF_MARKERS and frame is None:
            # The whole frame header must be there (a truncated one is not trusted).
            if length < 8 or pos + length > end:
                break
            precision, height, width, components = struct.unpack_from(">BHHB", view, pos + 2)
            if not (width and height):
                break
            frame = (width, height, precision, components)
        elif marker == _APP1 and bytes(view[pos + 2 : pos + 2 + len(_EXIF_ID)]) == _EXIF_ID:
            exif = True
        pos += length
    if frame is None:
        return None
    width, height, precision, components = frame
    return JpegHeader(width, height, precision, components, exif)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's start-of-frame header, or None if none is found
    (:func:`jpeg_header`)."""
    header = jpeg_header(data)
    return None if header is None else (header.width, header.height)


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR chunk, or None if it is not a PNG header."""
    if len(data) < 24 or bytes(data[:8]) != _PNG_SIGNATURE or bytes(data[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return (width, height) if width and height else None


def bmp_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a BMP's DIB header (the core header of OS/2 bitmaps or the
    Windows info headers; a negative height is a top-down bitmap), or None."""
    if len(data) < 26 or bytes(data[:2]) != _BMP_SIGNATURE:
        return None
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    elif dib_size >= 40:
        width, height = struct.unpack_from("<ii", data, 18)
        height = abs(height)
    else:
        return None
    return (width, height) if width > 0 and height > 0 else None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a WebP's first chunk: ``VP8 `` (lossy), ``VP8L`` (lossless)
    or ``VP8X`` (extended: the canvas size), or None."""
    if len(data) < 30 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WEBP":
        return None
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":
        if bytes(data[23:26]) != _WEBP_VP8_START:
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        width, height = width & 0x3FFF, height & 0x3FFF
    elif chunk == b"VP8L":
        if data[20] != _WEBP_VP8L_SIGNATURE:
            return None
        (bits,) = struct.unpack_from("<I", data, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        return None
    return (width, height) if width and height else None


def image_format(data: bytes) -> str | None:
    """The format of :data:`IMAGE_FORMATS` that ``data`` starts like (its signature only),
    or None."""
    head = bytes(data[:16])
    if head.startswith(_JPEG_SOI):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_BMP_SIGNATURE):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


_SIZE_READERS = {"jpeg": jpeg_size, "png": png_size, "bmp": bmp_size, "webp": webp_size}


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` that the header of an image of :data:`IMAGE_FORMATS` declares (no
    decode); None for any other bytes or a header that cannot be read."""
    kind = image_format(data)
    return None if kind is None else _SIZE_READERS[kind](data)


def _unsupported(formats: Collection[str]) -> ImageDecodeError:
    names = [_FORMAT_NAMES[f] for f in IMAGE_FORMATS if f in formats]
    listed = " or ".join(names) if len(names) <= 2 else f"{', '.join(names[:-1])} or {names[-1]}"
    return ImageDecodeError("unsupported_format", f"not a {listed} image")


HEADER_PROBE_BYTES = 1 << 20
"""Bytes :func:`read_image_file` reads to find the size header (JPEG APP segments, EXIF
thumbnails included, rarely exceed this; beyond, it reads up to :data:`HEADER_MAX_BYTES`)."""
HEADER_MAX_BYTES = 16 << 20
ENCODED_SLACK_BYTES = 16 << 20
"""Metadata allowance of :func:`read_image_file`: no image of ``w`` x ``h`` pixels needs
more than ``4 * w * h`` bytes plus this."""


def read_image_file(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    formats: Collection[str] = STREAM_FORMATS,
) -> bytes:
    """The bytes of an image file, its size header judged first: a file whose header
    declares more than ``max_pixels``, that is not one of ``formats`` (of
    :data:`IMAGE_FORMATS`) or has no readable size header, or that is far larger than any
    image of its declared size is refused with :class:`ImageDecodeError` having read at
    most :data:`HEADER_MAX_BYTES` of it. ``OSError`` as ``open`` raises it.
    """
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        head = f.read(min(HEADER_PROBE_BYTES, total) if total else HEADER_PROBE_BYTES)
        if not head:
            raise ImageDecodeError("empty_image", "empty file")
        kind = image_format(head)
        if kind is None or kind not in formats:
            raise _unsupported(formats)
        size = header_size(head)
        if size is None and len(head) == HEADER_PROBE_BYTES:
            head += f.read(HEADER_MAX_BYTES - len(head))
            size = header_size(head)
        if size is None:
            raise ImageDecodeError("corrupt_image", "no valid size header")
        width, height = size
        if width * height > max_pixels:
            raise ImageDecodeError(
                "too_large", f"{width}x{height} image exceeds the {max_pixels} pixel limit"
            )
        if total > 4 * width * height + ENCODED_SLACK_BYTES:
            raise ImageDecodeError(
                "too_large", f"{total} bytes is far more than a {width}x{height} image needs"
            )
        rest = f.read(4 * width * height + ENCODED_SLACK_BYTES - len(head) + 1)
    data = head + rest
    if len(data) > 4 * width * height + ENCODED_SLACK_BYTES:
        raise ImageDecodeError(
            "too_large", f"more bytes than a {width}x{height} image needs (a growing file?)"
        )
    return data


def decoded_bytes(
    data: bytes,
    *,
    reduce: str = "auto",
    min_size: tuple[int, int] = INPUT_SIZE,
    size: tuple[int, int] | None = None,
) -> int:
    """Bytes of the pixels :func:`decode_image` would make of ``data`` (3 bytes per pixel,
    reduced JPEG scale included), from the header alone (``size``: its
    :func:`header_size`, when the caller read it already); 0 when the header is unreadable
    (such bytes fail before any decode). For admission control: memory is reserved before
    a decode is scheduled."""
    size = size or header_size(data)
    if size is None:
        return 0
    width, height = size
    factor = 1
    if reduce == "auto" and bytes(data[:2]) == _JPEG_SOI:
        factor = _reduce_factor(width, height, min_size)
    return 3 * -(-width // factor) * -(-height // factor)


def _reduce_factor(width: int, height: int, size: tuple[int, int] = INPUT_SIZE) -> int:
    """Largest JPEG scale-down factor (1, 2, 4, 8) keeping both sides >= the model input."""
    for factor in (8, 4, 2):
        if width // factor >= size[0] and height // factor >= size[1]:
            return factor
    return 1


def _turbo_decode(data: bytes, header: JpegHeader, factor: int, bgr: bool) -> np.ndarray | None:
    """A JPEG decoded by simplejpeg (libjpeg-turbo's TurboJPEG API) at ``1/factor`` scale:
    the same pixels as ``cv2.imdecode`` (the same library and scaled IDCT;
    tests/facemask/core/test_preprocess.py compares them), in the asked channel order,
    without OpenCV's per-call overhead and colour conversion (15-35 % faster here).

    None for what it does not decode exactly like OpenCV (:attr:`JpegHeader.turbo_decodable`)
    or cannot decode cleanly (corrupt, truncated: a libjpeg warning is an error here), so
    that OpenCV decides those as before."""
    if not header.turbo_decodable or min(header.width, header.height) < _TURBO_MIN_SIDE:
        return None
    try:
        pixels: np.ndarray = simplejpeg.decode_jpeg(
            data,
            colorspace="BGR" if bgr else "RGB",
            min_factor=factor,
            # the smallest size 1/factor gives (libjpeg rounds up): no further reduction
            min_width=-(-header.width // factor) if factor > 1 else 0,
            min_height=-(-header.height // factor) if factor > 1 else 0,
        )
    except ValueError:
        return None
    return pixels


def decode_image(
    data: bytes,
    *,
    reduce: str = "auto",
    max_pixels: int = MAX_PIXELS,
    min_size: tuple[int, int] = INPUT_SIZE,
    expect_size: tuple[int, int] | None = None,
    bgr: bool = False,
    formats: Collection[str] = STREAM_FORMATS,
) -> DecodedImage:
    """Decode JPEG or PNG bytes (or any of ``formats``, of :data:`IMAGE_FORMATS`) to RGB uint8
    (BGR, OpenCV's order, with ``bgr``): the one image decode of the project, with its limits.

    The size declared in the header is checked against ``max_pixels`` before anything is
    decoded (decompression bombs), and against ``expect_size`` (the ``(width, height)`` its
    sender declared, e.g. a frame entry's ``w``/``h``; either orientation) before anything
    is decoded too; the decoded size must then equal it (``size_mismatch``).
    ``reduce="full"`` decodes at full size (as ``cv2.imread``); ``"auto"`` lets libjpeg
    decode a JPEG at 1/2, 1/4 or 1/8 scale, the largest factor whose result is still at
    least ``min_size`` (default 260x260: the detector resizes to 260x260 anyway; this is
    several times cheaper for HD frames; tiled inference asks for more so that each tile
    keeps its resolution). The other formats are always decoded at full size. JPEGs are
    decoded by libjpeg-turbo through simplejpeg wherever that gives OpenCV's exact pixels
    (:func:`_turbo_decode`), else by OpenCV. Raises :class:`ImageDecodeError`.
    """
    if reduce not in DECODE_MODES:
        raise ValueError(f"reduce must be one of {DECODE_MODES}, not {reduce!r}")
    if not data:
        raise ImageDecodeError("empty_image", "no image bytes")
    kind = image_format(data)
    if kind is None or kind not in formats:
        raise _unsupported(formats)
    jpeg = jpeg_header(data) if kind == "jpeg" else None
    declared = (jpeg.width, jpeg.height) if jpeg is not None else header_size(data)
    if declared is None:
        raise ImageDecodeError("corrupt_image", f"no valid {_FORMAT_NAMES[kind]} size header")
    width, height = declared
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large", f"{width}x{height} image exceeds the {max_pixels} pixel limit"
        )
    if expect_size is not None and expect_size not in (declared, (height, width)):
        raise ImageDecodeError(
            "size_mismatch",
            f"declared {expect_size[0]}x{expect_size[1]}, image header says {width}x{height}",
        )
    factor = _reduce_factor(width, height, min_size) if kind == "jpeg" and reduce == "auto" else 1
    pixels = None if jpeg is None else _turbo_decode(data, jpeg, factor, bgr)
    if pixels is None:
        flag = _REDUCED_FLAGS[factor] if factor > 1 else cv2.IMREAD_COLOR
        try:
            decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
        except cv2.error as exc:
            raise ImageDecodeError("corrupt_image", f"OpenCV cannot decode it: {exc}") from exc
        if decoded is None or decoded.size == 0:
            raise ImageDecodeError(
                "corrupt_image", f"OpenCV cannot decode this {_FORMAT_NAMES[kind]}"
            )
        pixels = decoded if bgr else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    out_h, out_w = pixels.shape[:2]
    if factor == 1:
        # The decoded size is authoritative (EXIF orientation may have swapped the sides).
        width, height = out_w, out_h
    else:
        expected = (-(-width // factor), -(-height // factor))  # libjpeg rounds up
        if (out_h, out_w) == expected and (out_w, out_h) != expected:
            width, height = height, width  # turned by its EXIF orientation
    if expect_size is not None and expect_size != (width, height):
        raise ImageDecodeError(
            "size_mismatch",
            f"declared {expect_size[0]}x{expect_size[1]}, image is {width}x{height}",
        )
    return DecodedImage(rgb=pixels, width=width, height=height)


def preprocess(rgb: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """One RGB uint8 image ``[h, w, 3]`` to the float32 model input ``[260, 260, 3]``.

    ``cv2.resize`` (``INTER_LINEAR``) to ``size`` (width, height), then ``/ 255`` exactly as
    the reference (float64 division rounded to float32).
    """
    out = np.empty((size[1], size[0], 3), dtype=np.float32)
    preprocess_into(rgb, out)
    return out


def preprocess_batch(
    images: Sequence[np.ndarray], size: tuple[int, int] = INPUT_SIZE
) -> np.ndarray:
    """Several RGB uint8 images (any sizes) to one float32 batch ``[B, 260, 260, 3]``."""
    out = np.empty((len(images), size[1], size[0], 3), dtype=np.float32)
    for i, rgb in enumerate(images):
        preprocess_into(rgb, out[i])
    return out


def preprocess_into(rgb: np.ndarray, out: np.ndarray, *, bgr: bool = False) -> None:
    """:func:`preprocess` written into ``out`` (float32 ``[h, w, 3]``, e.g. one row of a
    batch array): no per-image tensor is allocated. ``bgr``: ``rgb`` is in OpenCV's BGR
    order (:func:`decode_image` with ``bgr=True``); ``out`` is RGB all the same."""
    scale_into(resize_input(rgb, (out.shape[1], out.shape[0]), bgr=bgr), out)


def resize_input(
    rgb: np.ndarray, size: tuple[int, int] = INPUT_SIZE, *, bgr: bool = False
) -> np.ndarray:
    """The first half of :func:`preprocess`: ``rgb`` (uint8 ``[h, w, 3]``) resized to
    ``size`` (width, height), still uint8 RGB (a quarter of the float32 input's bytes: what
    a decode pool hands on). ``bgr``: ``rgb`` is BGR, turned to RGB after the resize (it
    treats the channels alike, so this equals resizing the RGB image, on fewer pixels)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image [h, w, 3], got {rgb.dtype} {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("empty image")
    resized: np.ndarray = (
        rgb  # INTER_LINEAR to the same size is the identity
        if (rgb.shape[1], rgb.shape[0]) == size
        else cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    )
    if bgr:
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return resized


def scale_into(resized: np.ndarray, out: np.ndarray) -> None:
    """The second half of :func:`preprocess`: uint8 RGB ``resized`` (the shape of ``out``)
    to float32 ``/ 255`` written into ``out``, bit-exact with the reference."""
    if resized.shape != out.shape or resized.dtype != np.uint8:
        raise ValueError(f"expected uint8 {out.shape}, got {resized.dtype} {resized.shape}")
    np.divide(resized, _SCALE, out=out, dtype=np.float32)
