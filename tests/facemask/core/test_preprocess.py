"""Image decoding (sizes, reduced decode, errors, decompression bombs) and model input."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemask.core.preprocess import (
    ENCODED_SLACK_BYTES,
    HEADER_PROBE_BYTES,
    IMAGE_FORMATS,
    INPUT_SIZE,
    ImageDecodeError,
    bmp_size,
    decode_image,
    header_size,
    image_format,
    jpeg_header,
    jpeg_size,
    png_size,
    preprocess,
    preprocess_batch,
    preprocess_into,
    read_image_file,
    resize_input,
    scale_into,
    webp_size,
)


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _smooth(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)


def _encode(rgb: np.ndarray, ext: str = ".jpg", params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params or [])
    assert ok
    return buf.tobytes()


def _jpeg_header(width: int, height: int, *, sof: int = 0xC0, before_sof: bytes = b"") -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    frame = bytes([0xFF, sof]) + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + before_sof + frame


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


# --- header parsing -------------------------------------------------------------------


def test_jpeg_size_of_encoded_images() -> None:
    assert jpeg_size(_encode(_noise(200, 300))) == (300, 200)
    progressive = _encode(_noise(120, 70), params=[cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert jpeg_size(progressive) == (70, 120)


def test_jpeg_size_of_hand_made_headers() -> None:
    assert jpeg_size(_jpeg_header(640, 480)) == (640, 480)
    assert jpeg_size(_jpeg_header(65535, 1, sof=0xC2)) == (65535, 1)
    # fill bytes before a marker, and a DHT segment (0xC4, not a frame header) first
    dht = b"\xff\xc4" + struct.pack(">H", 4) + b"\x00\x00"
    assert jpeg_size(_jpeg_header(10, 20, before_sof=b"\xff\xff" + dht)) == (10, 20)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"not a jpeg",
        _jpeg_header(640, 480)[:-6],  # cut inside the frame header
        b"\xff\xd8\xff\xda\x00\x02",  # scan data before any frame header
        _jpeg_header(640, 0),  # height defined later (DNL): not supported
        b"\xff\xd8\x00\x00",  # no marker where one must be
    ],
)
def test_jpeg_size_none(data: bytes) -> None:
    assert jpeg_size(data) is None


def test_png_size() -> None:
    assert png_size(_encode(_noise(30, 50), ".png")) == (50, 30)
    assert png_size(png_header(7, 9)) == (7, 9)
    assert png_size(b"\x89PNG\r\n\x1a\n") is None
    assert png_size(_jpeg_header(7, 9)) is None


# --- decode ---------------------------------------------------------------------------


def test_decode_matches_imread(samples_dir: Path) -> None:
    for path in sorted(samples_dir.iterdir()):
        decoded = decode_image(path.read_bytes(), reduce="full")
        expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decoded.rgb, expected)
        assert (decoded.height, decoded.width) == expected.shape[:2]


@pytest.mark.parametrize(
    ("width", "height", "decoded"),
    [
        (1280, 720, (640, 360)),  # 1/2: 1/4 would be 320x180
        (2100, 2100, (263, 263)),  # 1/8
        (1100, 1100, (275, 275)),  # 1/4
        (520, 520, (260, 260)),  # smallest image reduced at all
        (519, 1000, (519, 1000)),  # 1/2 would give 259 px: unchanged
        (600, 400, (600, 400)),
    ],
)
def test_auto_reduced_decode_size(width: int, height: int, decoded: tuple[int, int]) -> None:
    out = decode_image(_encode(_smooth(height, width)), reduce="auto")
    assert (out.rgb.shape[1], out.rgb.shape[0]) == decoded
    assert (out.width, out.height) == (width, height)  # the original size
    assert out.rgb.dtype == np.uint8


def test_full_decode_and_png_are_not_reduced() -> None:
    rgb = _smooth(720, 1280)
    assert decode_image(_encode(rgb), reduce="full").rgb.shape == (720, 1280, 3)
    png = decode_image(_encode(rgb, ".png"), reduce="auto")
    np.testing.assert_array_equal(png.rgb, rgb)
    assert (png.width, png.height) == (1280, 720)


def test_reduced_decode_looks_like_the_full_image() -> None:
    data = _encode(_smooth(720, 1280))
    full = decode_image(data, reduce="full").rgb
    half = decode_image(data, reduce="auto").rgb
    shrunk = cv2.resize(full, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - shrunk.astype(int)).mean() < 3


def test_decode_keeps_colour_order() -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    out = decode_image(_encode(rgb, ".png"))
    np.testing.assert_array_equal(out.rgb[0, 0], [255, 0, 0])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_image"),
        (b"GIF89a\x01\x00\x01\x00", "unsupported_format"),
        (b"BM" + bytes(100), "unsupported_format"),
        (b"\xff\xd8\xff\xe0garbage", "corrupt_image"),
        (_jpeg_header(64, 64) + b"\x00" * 200, "corrupt_image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(30), "corrupt_image"),
        (png_header(64, 64) + b"\x00" * 50, "corrupt_image"),
    ],
)
def test_decode_errors(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_truncated_jpeg_is_corrupt() -> None:
    data = _encode(_noise(300, 400))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 2], reduce="full")
    assert info.value.reason == "corrupt_image"


def test_decompression_bomb_rejected_before_decoding() -> None:
    # Only headers follow: decoding would fail as corrupt, so too_large proves the size
    # check comes first.
    for data in (_jpeg_header(20000, 20000) + bytes(64), png_header(100_000, 100_000)):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(data)
        assert info.value.reason == "too_large"


def test_max_pixels_limit() -> None:
    data = _encode(_noise(100, 100))
    assert decode_image(data, max_pixels=10_000).width == 100
    with pytest.raises(ImageDecodeError, match="too_large"):
        decode_image(data, max_pixels=9_999)


@pytest.mark.parametrize(
    ("expect", "ok"),
    [((400, 300), True), ((300, 400), False), ((640, 480), False), (None, True)],
)
def test_declared_size_must_match(expect: tuple[int, int] | None, ok: bool) -> None:
    data = _encode(_noise(300, 400))
    if ok:
        assert decode_image(data, expect_size=expect).width == 400
        return
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, expect_size=expect)
    assert info.value.reason == "size_mismatch"


def test_declared_size_is_checked_on_the_header_before_decoding() -> None:
    # Only a header follows: size_mismatch (not corrupt_image) proves the check comes first.
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_jpeg_header(16000, 16000) + bytes(64), expect_size=(640, 480))
    assert info.value.reason in ("too_large", "size_mismatch")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_jpeg_header(800, 600) + bytes(64), expect_size=(640, 480))
    assert info.value.reason == "size_mismatch"


def test_bgr_output() -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    out = decode_image(_encode(rgb, ".png"), bgr=True)
    np.testing.assert_array_equal(out.rgb[0, 0], [0, 0, 255])


def _exif_orientation(orientation: int) -> bytes:
    """An APP1 EXIF segment whose only tag is the orientation (big-endian TIFF)."""
    ifd = struct.pack(">HHHIHHI", 1, 0x0112, 3, 1, orientation, 0, 0)
    payload = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _with_segment(jpeg: bytes, segment: bytes) -> bytes:
    return jpeg[:2] + segment + jpeg[2:]


_SAMPLING = cv2.IMWRITE_JPEG_SAMPLING_FACTOR


@pytest.mark.parametrize(
    ("size", "params"),
    [
        ((640, 480), []),
        ((1280, 720), []),
        ((1917, 1083), [cv2.IMWRITE_JPEG_QUALITY, 60]),  # odd sizes: libjpeg rounds up
        ((333, 777), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ((1040, 1040), [_SAMPLING, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        ((1040, 600), [_SAMPLING, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
        ((2100, 2100), [cv2.IMWRITE_JPEG_OPTIMIZE, 1]),
    ],
)
@pytest.mark.parametrize("bgr", [False, True])
def test_jpeg_decode_is_exactly_opencvs(
    size: tuple[int, int], params: list[int], bgr: bool
) -> None:
    """The libjpeg-turbo path gives OpenCV's pixels at every scale, in either order."""
    width, height = size
    data = _encode(_noise(height, width, seed=width), params=params)
    flags = {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }
    for reduce in ("full", "auto"):
        out = decode_image(data, reduce=reduce, bgr=bgr)
        factor = next(f for f in flags if -(-width // f) == out.rgb.shape[1])
        assert reduce == "auto" or factor == 1
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), flags[factor])
        if not bgr:
            expected = cv2.cvtColor(expected, cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(out.rgb, expected)
        assert (out.width, out.height) == size


def test_greyscale_jpeg_decodes_to_three_equal_channels() -> None:
    grey = _noise(90, 120)[..., 0]
    ok, buf = cv2.imencode(".jpg", grey)
    assert ok
    data = buf.tobytes()
    header = jpeg_header(data)
    assert header is not None and header.components == 1 and header.turbo_decodable
    out = decode_image(data, reduce="full")
    expected = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out.rgb, expected)


@pytest.mark.parametrize(
    ("size", "decoded"),
    [((640, 480), (640, 480)), ((1280, 720), (640, 360)), ((1100, 1100), (275, 275)),
     ((2100, 2100), (263, 263))],
)  # fmt: skip
def test_plain_jpegs_do_not_go_through_opencv(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    """The fast path is taken at every scale (a regression to OpenCV's decoder would cost
    15-35 %)."""
    data = _encode(_smooth(size[1], size[0]))

    def refuse(*_args: object) -> None:
        raise AssertionError("cv2.imdecode called for a plain JPEG")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    out = decode_image(data)
    assert (out.rgb.shape[1], out.rgb.shape[0]) == decoded and (out.width, out.height) == size


def test_tiny_jpegs_decode_as_opencv_does() -> None:
    """Below 8 px a side TurboJPEG may choose another scale: OpenCV decodes those."""
    data = _encode(_noise(3, 3))
    out = decode_image(data, min_size=(1, 1))
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    np.testing.assert_array_equal(out.rgb, cv2.cvtColor(expected, cv2.COLOR_BGR2RGB))


def test_exif_orientation_is_applied_as_opencv_does() -> None:
    """A JPEG with EXIF goes to OpenCV, which turns it by its orientation (6: 90 degrees
    clockwise); the size it reports is the turned one."""
    data = _with_segment(_encode(_smooth(40, 100)), _exif_orientation(6))
    header = jpeg_header(data)
    assert header is not None and header.exif and not header.turbo_decodable
    out = decode_image(data, reduce="full")
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert expected.shape[:2] == (100, 40)  # OpenCV did turn it
    np.testing.assert_array_equal(out.rgb, cv2.cvtColor(expected, cv2.COLOR_BGR2RGB))
    assert (out.width, out.height) == (40, 100)


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        (_jpeg_header(640, 480), (640, 480, 8, 1, False)),
        (_with_segment(_jpeg_header(64, 32), _exif_orientation(1)), (64, 32, 8, 1, True)),
        (
            b"\xff\xd8" + b"\xff\xc0" + struct.pack(">HBHHB", 17, 12, 20, 10, 3) + bytes(9),
            (10, 20, 12, 3, False),  # 12-bit samples: OpenCV decodes those
        ),
        (
            b"\xff\xd8" + b"\xff\xc0" + struct.pack(">HBHHB", 20, 8, 20, 10, 4) + bytes(12),
            (10, 20, 8, 4, False),  # CMYK: OpenCV decodes those
        ),
    ],
)
def test_jpeg_header_fields(data: bytes, fields: tuple[int, int, int, int, bool]) -> None:
    header = jpeg_header(data)
    assert header is not None
    got = (header.width, header.height, header.precision, header.components, header.exif)
    assert got == fields
    assert header.turbo_decodable == (fields[2] == 8 and fields[3] in (1, 3) and not fields[4])


def test_unknown_reduce_mode() -> None:
    with pytest.raises(ValueError, match="reduce"):
        decode_image(_encode(_noise(10, 10)), reduce="half")


# --- model input ----------------------------------------------------------------------


def test_preprocess_shape_dtype_range() -> None:
    rgb = _noise(480, 640)
    rgb[0, 0] = 0
    rgb[-1, -1] = 255
    out = preprocess(rgb)
    assert INPUT_SIZE == (260, 260)
    assert out.shape == (260, 260, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_preprocess_is_bit_exact_with_the_reference() -> None:
    for shape in ((480, 640), (100, 90), (260, 260), (1, 1)):
        rgb = _noise(*shape, seed=sum(shape))
        reference = (cv2.resize(rgb, (260, 260)) / 255.0).astype(np.float32)
        np.testing.assert_array_equal(preprocess(rgb), reference)


def test_preprocess_batch() -> None:
    images = [_noise(480, 640, 1), _noise(100, 300, 2), _noise(260, 260, 3)]
    batch = preprocess_batch(images)
    assert batch.shape == (3, 260, 260, 3) and batch.dtype == np.float32
    for i, rgb in enumerate(images):
        np.testing.assert_array_equal(batch[i], preprocess(rgb))
    assert preprocess_batch([]).shape == (0, 260, 260, 3)


def test_scaling_is_bit_exact_for_every_pixel_value() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = np.empty(values.shape, np.float32)
    scale_into(values, out)
    np.testing.assert_array_equal(out, (values / 255.0).astype(np.float32))


def test_the_two_halves_and_bgr_input_give_the_same_input() -> None:
    """The decode pool resizes a BGR frame to uint8 RGB; the batch is scaled from it: the
    same bits as preprocessing the RGB frame in one go."""
    for shape in ((480, 640), (100, 90), (260, 260)):
        rgb = _noise(*shape, seed=shape[0])
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        resized = resize_input(bgr, bgr=True)
        assert resized.dtype == np.uint8 and resized.shape == (260, 260, 3)
        batch = np.empty((2, 260, 260, 3), np.float32)
        scale_into(resized, batch[0])
        preprocess_into(bgr, batch[1], bgr=True)
        np.testing.assert_array_equal(batch[0], preprocess(rgb))
        np.testing.assert_array_equal(batch[1], preprocess(rgb))


def test_scale_into_refuses_a_mismatched_input() -> None:
    with pytest.raises(ValueError, match="expected uint8"):
        scale_into(np.zeros((10, 10, 3), np.uint8), np.empty((260, 260, 3), np.float32))
    with pytest.raises(ValueError, match="expected uint8"):
        scale_into(np.zeros((260, 260, 3), np.float32), np.empty((260, 260, 3), np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_preprocess_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        preprocess(bad)


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF) is rewritten to claim ``width`` x ``height``:
    what a lying sender or a decompression bomb looks like to the header parser."""
    size = jpeg_size(data)
    assert size is not None
    pos = 2
    while True:  # walk to the SOF segment (cv2 writes SOI, APP0, DQT..., SOF0)
        marker = data[pos + 1]
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if marker in (0xC0, 0xC2):
            out = bytearray(data)
            struct.pack_into(">HH", out, pos + 5, height, width)
            return bytes(out)
        pos += 2 + length


_TINY = _encode(_noise(48, 64))
_TINY_PROGRESSIVE = _encode(_noise(48, 64), params=[cv2.IMWRITE_JPEG_PROGRESSIVE, 1])


@pytest.mark.parametrize(
    ("data", "expect", "reason"),
    [
        # a real 64x48 JPEG whose SOF claims 16000x16000: a bomb, whatever it declares
        (patch_jpeg_size(_TINY, 16000, 16000), None, "too_large"),
        (patch_jpeg_size(_TINY, 16000, 16000), (640, 480), "too_large"),
        (patch_jpeg_size(_TINY_PROGRESSIVE, 16000, 16000), (640, 480), "too_large"),
        # within the limit, but not what the sender declared
        (patch_jpeg_size(_TINY, 4000, 3000), (640, 480), "size_mismatch"),
        (patch_jpeg_size(_TINY_PROGRESSIVE, 4000, 3000), (640, 480), "size_mismatch"),
        (png_header(4000, 3000) + bytes(64), (640, 480), "size_mismatch"),
        (png_header(100_000, 100_000), (640, 480), "too_large"),
        # truncated or garbled headers
        (_TINY[:40], None, "corrupt_image"),
        (_jpeg_header(64, 48)[:-4], None, "corrupt_image"),
        (png_header(64, 48)[:20], None, "corrupt_image"),
        (b"\xff\xd8" + bytes(64), None, "corrupt_image"),
        # not an image format the project takes
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", None, "unsupported_format"),
        (b"BM" + bytes(100), None, "unsupported_format"),
        (np.random.default_rng(3).bytes(500), None, "unsupported_format"),
    ],
)
@pytest.mark.usefixtures("no_decode")
def test_header_is_judged_before_any_decode(
    data: bytes, expect: tuple[int, int] | None, reason: str
) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, expect_size=expect)
    assert info.value.reason == reason


@pytest.mark.parametrize("data", [_TINY, _TINY_PROGRESSIVE, _encode(_noise(48, 64), ".png")])
def test_honest_small_images_decode(data: bytes) -> None:
    image = decode_image(data, expect_size=(64, 48))
    assert (image.width, image.height) == (64, 48)
    assert image.rgb.shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_image"),
        (b"GIF89a" + bytes(64), "unsupported_format"),
        (_TINY[:40], "corrupt_image"),
        (patch_jpeg_size(_TINY, 16000, 16000), "too_large"),
        (
            png_header(64, 48) + bytes(HEADER_PROBE_BYTES + 4 * 64 * 48 + ENCODED_SLACK_BYTES),
            "too_large",
        ),
    ],
)
def test_read_image_file_judges_the_header_first(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "image"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError) as info:
        read_image_file(path)
    assert info.value.reason == reason


def test_read_image_file_reads_honest_files_whole(tmp_path: Path) -> None:
    for data in (_TINY, _TINY_PROGRESSIVE, _encode(_noise(48, 64), ".png")):
        path = tmp_path / "image"
        path.write_bytes(data)
        assert read_image_file(path) == data
    # a JPEG whose size header comes after more than the first probe (large APP segments)
    app = b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533)
    data = _TINY[:2] + app * 20 + _TINY[2:]
    path.write_bytes(data)
    assert read_image_file(path) == data
    assert decode_image(data).width == 64
    with pytest.raises(ImageDecodeError, match="too_large"):
        read_image_file(path, max_pixels=1000)


# --- BMP and WebP (taken where the caller asks: the command line) ---------------------


def bmp_header(width: int, height: int, *, core: bool = False) -> bytes:
    """A BMP file header and DIB header (core: the 12-byte OS/2 one) declaring a size."""
    if core:
        dib = struct.pack("<IHHHH", 12, width, height, 1, 24)
    else:
        dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def webp_header(width: int, height: int, chunk: bytes) -> bytes:
    """The first bytes of a WebP whose ``chunk`` (VP8 , VP8L, VP8X) declares a size."""
    if chunk == b"VP8 ":
        body = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    elif chunk == b"VP8L":
        body = b"\x2f" + struct.pack("<I", (width - 1) | ((height - 1) << 14)) + bytes(5)
    else:
        body = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(body)) + b"WEBP" + chunk + bytes(4) + body


_WEBP_LOSSY = _encode(_noise(48, 64), ".webp", [cv2.IMWRITE_WEBP_QUALITY, 80])
_WEBP_LOSSLESS = _encode(_noise(48, 64), ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])
_BMP = _encode(_noise(48, 64), ".bmp")


@pytest.mark.parametrize(
    ("data", "kind", "size"),
    [
        (_BMP, "bmp", (64, 48)),
        (bmp_header(640, 480), "bmp", (640, 480)),
        (bmp_header(640, -480), "bmp", (640, 480)),  # a top-down bitmap
        (bmp_header(300, 200, core=True), "bmp", (300, 200)),
        (bmp_header(0, 480), "bmp", None),
        (b"BM" + bytes(100), "bmp", None),  # no DIB header
        (_WEBP_LOSSY, "webp", (64, 48)),
        (_WEBP_LOSSLESS, "webp", (64, 48)),
        (webp_header(1920, 1080, b"VP8 "), "webp", (1920, 1080)),
        (webp_header(16383, 16383, b"VP8L"), "webp", (16383, 16383)),
        (webp_header(20000, 20000, b"VP8X"), "webp", (20000, 20000)),
        (webp_header(64, 48, b"VP8 ").replace(b"\x9d\x01\x2a", b"\x00\x00\x00"), "webp", None),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp", None),  # truncated
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(30), None, None),
    ],
)
def test_bmp_and_webp_headers(data: bytes, kind: str | None, size: tuple[int, int] | None) -> None:
    assert image_format(data) == kind
    assert header_size(data) == size
    if kind == "bmp":
        assert bmp_size(data) == size and webp_size(data) is None
    if kind == "webp":
        assert webp_size(data) == size and bmp_size(data) is None


@pytest.mark.parametrize("data", [_BMP, _WEBP_LOSSY, _WEBP_LOSSLESS])
def test_bmp_and_webp_decode_only_when_asked(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="not a JPEG or PNG image") as info:
        decode_image(data)  # the services' default: JPEG and PNG only
    assert info.value.reason == "unsupported_format"
    image = decode_image(data, formats=IMAGE_FORMATS, expect_size=(64, 48))
    assert image.rgb.shape == (48, 64, 3)
    if data is not _WEBP_LOSSY:  # lossless: the very pixels
        np.testing.assert_array_equal(image.rgb, _noise(48, 64))


@pytest.mark.parametrize(
    "data",
    [
        bmp_header(16000, 16000) + bytes(64),
        bmp_header(65535, 65535, core=True) + bytes(64),
        webp_header(16383, 16383, b"VP8 ") + bytes(64),
        webp_header(16383, 16383, b"VP8L") + bytes(64),
        webp_header(100_000, 100_000, b"VP8X") + bytes(64),
    ],
)
@pytest.mark.usefixtures("no_decode")
def test_bmp_and_webp_bombs_are_refused_on_the_header(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, formats=IMAGE_FORMATS)
    assert info.value.reason == "too_large"
    path = tmp_path / "bomb"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError) as info:
        read_image_file(path, formats=IMAGE_FORMATS)
    assert info.value.reason == "too_large"


def test_read_image_file_takes_the_formats_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "image"
    for data in (_BMP, _WEBP_LOSSLESS):
        path.write_bytes(data)
        with pytest.raises(ImageDecodeError, match="not a JPEG or PNG image"):
            read_image_file(path)
        assert read_image_file(path, formats=IMAGE_FORMATS) == data
    path.write_bytes(b"GIF89a" + bytes(64))
    with pytest.raises(ImageDecodeError, match="not a JPEG, PNG, BMP or WebP image"):
        read_image_file(path, formats=IMAGE_FORMATS)
