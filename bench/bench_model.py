"""Model benchmark: the project's batched detector against the upstream per-image loop.

``python -m bench.bench_model`` (``make bench-model``; ``--quick`` for a smoke run) measures,
in one process and in interleaved rounds:

* **model**: images/s of the model alone on pre-decoded, pre-resized float32 tensors: the
  project's detector (``Detector.infer``) at batch 1, 4, 8, 16, 32, 64, and upstream's
  ``session.run`` with a batch of one (its loop's model call). Extra rows for every other
  runtime in the registry that loads (``tflite``).
* **decoded**: frames/s from decoded RGB frames to detections: upstream's per-image loop
  (resize, /255, ``session.run``, numpy decode + NMS) against ``Detector.detect`` (batch 32).
* **decode**: JPEG decode alone per 1280x720 frame, full size against ``reduce="auto"``
  (libjpeg's reduced-scale decode).
* **end-to-end**: frames/s from JPEG bytes to detections: upstream's loop (full decode) against
  the project's default (decode ``auto`` + resize in a thread pool of 2, as the inference
  service's ``decode_workers``, feeding the batched model at batch 32, its ``max_batch_size``).

Other runtimes of the registry get rows too: ``tflite`` (LiteRT/XNNPACK; its model takes batch
1) at the same thread count, plus one interpreter per thread and the ``float32`` / ``int8``
variants when they have been built.

Frames: 1280x720 JPEGs (quality 90) made from the sample video upscaled (the dev-set images
when the video is missing). The compute limit is the machine's float32 matmul peak (a large
TensorFlow matmul, measured before and after the model rows, the best counts) divided by the
model's 1.52 GFLOP per image.

Fairness: every TensorFlow model here and the matmul run on the same thread count
(``--threads``, default: the usable cores) with one inter-op thread, the project runtime's
default; rounds are interleaved so load from elsewhere hits all configurations alike; each
configuration reports its best round (median in the JSON). Results: a table on stdout and
``bench/results/model.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench import common

SHARED_DIR = Path(
    os.environ.get("FACEMASK_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")
)
VIDEO = SHARED_DIR / "data" / "video" / "group4_masks.mp4"
DEV_IMAGES = SHARED_DIR / "data" / "facemask-dev" / "images"
FRAME_SIZE = (1280, 720)
JPEG_QUALITY = 90
BATCH_SIZES = (1, 4, 8, 16, 32, 64)
DEFAULT_BATCH = 32  # the inference service's max_batch_size
DECODE_WORKERS = 2  # the inference service's decode_workers
CONF, IOU = 0.5, 0.4
TARGET_MODEL_FRACTION = 0.85
TARGET_E2E_SPEEDUP = 1.6


def make_frames(count: int, source: str = "auto") -> tuple[list[bytes], str]:
    """``count`` 1280x720 JPEG frames from the sample video (else the dev-set images)."""
    images: list[np.ndarray] = []
    used = ""
    if source in ("auto", "video") and VIDEO.is_file():
        capture = cv2.VideoCapture(str(VIDEO))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or count
        step = max(1, total // count)
        index = 0
        while len(images) < count:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % step == 0:
                images.append(bgr)
            index += 1
        capture.release()
        used = f"video {VIDEO.name} (every {step}th frame, upscaled)"
    if not images and source in ("auto", "dev"):
        for path in sorted(DEV_IMAGES.glob("*.jpg"))[:count]:
            image = cv2.imread(str(path))
            if image is not None:
                images.append(image)
        used = f"dev-set images {DEV_IMAGES} (resized)"
    if not images:
        raise SystemExit(f"no frames: neither {VIDEO} nor {DEV_IMAGES} is readable")
    while len(images) < count:  # short source: repeat
        images.extend(images[: count - len(images)])
    frames = []
    for bgr in images[:count]:
        big = cv2.resize(bgr, FRAME_SIZE, interpolation=cv2.INTER_LINEAR)
        ok, encoded = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SystemExit("cv2.imencode failed")
        frames.append(encoded.tobytes())
    return frames, used


def _model_loop(infer: Callable[[np.ndarray], object], tensors: np.ndarray, batch: int) -> None:
    for start in range(0, len(tensors), batch):
        infer(tensors[start : start + batch])


def project_end_to_end(
    detector: Any,
    frames: Sequence[bytes],
    pool: ThreadPoolExecutor,
    *,
    batch_size: int = DEFAULT_BATCH,
    reduce: str = "auto",
) -> int:
    """JPEG bytes -> detections the project's way; returns the number of detections.

    Decode + resize run in ``pool`` (every frame submitted at once, so decoding runs ahead
    of the model as in the inference service); the model thread stacks ``batch_size``
    ready tensors, runs one ``infer`` and post-processes each image.
    """
    from facemask.core.preprocess import decode_image, preprocess

    def prepare(data: bytes) -> np.ndarray:
        return preprocess(decode_image(data, reduce=reduce).rgb)

    futures = [pool.submit(prepare, data) for data in frames]
    found = 0
    for start in range(0, len(futures), batch_size):
        batch = np.stack([f.result() for f in futures[start : start + batch_size]])
        loc, cls = detector.infer(batch)
        for i in range(len(batch)):
            found += len(detector.postprocess(loc[i], cls[i], CONF, IOU))
    return found


# Thread option of each runtime's factory, so that every runtime uses the same thread count.
THREAD_OPTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "tensorflow": lambda n: {"intra_op_threads": n, "inter_op_threads": 1},
    "tflite": lambda n: {"num_threads": n},
}


def _other_runtimes(threads: int) -> dict[str, Any]:
    """Every registered runtime besides tensorflow that loads here, as detectors.

    For ``tflite`` also its other configurations at the same total thread count: one
    interpreter per thread (``interpreters``), and the ``float32`` / ``int8`` variants when
    ``facemask models build`` has made them. The first entry of a runtime is its default.
    """
    from facemask.detector import create_detector
    from facemask.runtime import available_runtimes

    wanted: list[tuple[str, str, dict[str, Any]]] = []
    for name in available_runtimes():
        if name == "tensorflow":
            continue
        if name not in THREAD_OPTIONS:
            print(f"# runtime {name}: not measured (its thread option is unknown)")
            continue
        wanted.append((name, name, THREAD_OPTIONS[name](threads)))
        if name == "tflite":
            if threads > 1:
                wanted.append(
                    (f"tflite {threads}x1", name, {"interpreters": threads, "num_threads": 1})
                )
            for variant in ("float32", "int8"):
                options = {**THREAD_OPTIONS[name](threads), "variant": variant}
                wanted.append((f"tflite {variant}", name, options))
    found: dict[str, Any] = {}
    for label, runtime, options in wanted:
        try:
            found[label] = create_detector(runtime=runtime, conf=CONF, iou=IOU, **options)
        except (ImportError, ValueError, RuntimeError, OSError, TypeError) as exc:
            print(f"# {label}: not measured ({exc})")
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_model", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (< 60 s): 32 frames, 1 round, small matmul; batch 64 then runs 32",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=common.default_threads(),
        help="model and matmul threads for everything measured (default: usable cores)",
    )
    parser.add_argument("--frames", type=int, default=None, help="frames (default 128; quick 32)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7)")
    parser.add_argument("--source", choices=("auto", "video", "dev"), default="auto")
    parser.add_argument(
        "--output", type=Path, default=None, help="default bench/results/model.json"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write the JSON."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quick = bool(args.quick)
    n_frames = args.frames or (32 if quick else 128)
    rounds = args.rounds or (1 if quick else 7)
    threads = args.threads
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())

    from bench.upstream import UpstreamTF
    from facemask import modelstore
    from facemask.core.preprocess import decode_image, preprocess_batch
    from facemask.detector import create_detector

    # The project's runtime sets TensorFlow's process-wide pools: create it first.
    detector = create_detector(
        runtime="tensorflow", conf=CONF, iou=IOU, **THREAD_OPTIONS["tensorflow"](threads)
    )
    upstream = UpstreamTF(
        modelstore.artifact_path("face_mask_detection.pb"), threads=threads, inter_op_threads=1
    )
    others = _other_runtimes(threads)

    print(f"# threads={threads} frames={n_frames} rounds={rounds} quick={quick}", flush=True)

    def measure_peak() -> common.MatmulPeak:
        if quick:
            return common.measure_matmul_gflops(threads, sizes=(2048,), repeats=3, warmup=1)
        return common.measure_matmul_gflops(threads)

    peaks = [measure_peak()]  # measured again after the model rows; the best one counts
    print(f"# matmul peak {peaks[0].gflops:.1f} GFLOP/s on {threads} threads", flush=True)

    frames, source = make_frames(n_frames, args.source)
    decoded_full = [decode_image(data, reduce="full") for data in frames]
    decoded_auto = decode_image(frames[0], reduce="auto")
    rgb_frames = [d.rgb for d in decoded_full]
    tensors = preprocess_batch(rgb_frames)

    # -- decode alone
    decode = common.run_interleaved(
        {
            "full": (lambda: [decode_image(f, reduce="full") for f in frames], len(frames)),
            "auto": (lambda: [decode_image(f, reduce="auto") for f in frames], len(frames)),
        },
        rounds,
    )

    # -- model alone
    model_cfgs: dict[str, tuple[Callable[[], object], int]] = {
        "upstream session.run": (
            lambda: _model_loop(upstream.run_model, tensors, 1),
            len(tensors),
        )
    }
    for b in BATCH_SIZES:
        model_cfgs[f"tensorflow b{b}"] = (
            lambda b=b: _model_loop(detector.infer, tensors, b),  # type: ignore[misc]
            len(tensors),
        )
    for name, other in others.items():
        # other runtimes (tflite: the model takes batch 1, a batch is a loop of invokes):
        # b1 and b32 for a runtime's default, b32 for its other configurations
        for b in (1, DEFAULT_BATCH) if name in THREAD_OPTIONS else (DEFAULT_BATCH,):
            model_cfgs[f"{name} b{b}"] = (
                lambda b=b, other=other: _model_loop(other.infer, tensors, b),  # type: ignore[misc]
                len(tensors),
            )
    model = common.run_interleaved(model_cfgs, rounds)
    peaks.append(measure_peak())
    peak = common.best_peak(peaks)
    limit = peak.compute_limit_images_per_s
    print(
        f"# matmul peak {peaks[1].gflops:.1f} GFLOP/s after the model rows; best "
        f"{peak.gflops:.1f} -> compute limit {limit:.1f} images/s",
        flush=True,
    )

    # -- decoded frames -> detections
    decoded = common.run_interleaved(
        {
            "upstream loop": (
                lambda: [upstream.inference(rgb, CONF, IOU) for rgb in rgb_frames],
                len(rgb_frames),
            ),
            "detector.detect": (
                lambda: detector.detect(rgb_frames, conf=CONF, iou=IOU, batch_size=DEFAULT_BATCH),
                len(rgb_frames),
            ),
        },
        rounds,
    )

    # -- JPEG bytes -> detections
    with ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="decode") as pool:
        e2e_cfgs: dict[str, tuple[Callable[[], object], int]] = {
            "upstream loop (decode full)": (
                lambda: [upstream.detect_jpeg(f, CONF, IOU) for f in frames],
                len(frames),
            ),
            "project default (decode auto, pool, b32)": (
                lambda: project_end_to_end(detector, frames, pool, reduce="auto"),
                len(frames),
            ),
            "project (decode full, pool, b32)": (
                lambda: project_end_to_end(detector, frames, pool, reduce="full"),
                len(frames),
            ),
        }
        for name, other in others.items():
            if name not in THREAD_OPTIONS:  # end-to-end: each runtime's default only
                continue
            e2e_cfgs[f"{name} (decode auto, pool, b32)"] = (
                lambda other=other: project_end_to_end(other, frames, pool),  # type: ignore[misc]
                len(frames),
            )
        e2e = common.run_interleaved(e2e_cfgs, rounds)
    upstream.close()

    # -- report
    rows: list[dict[str, Any]] = []

    def add(
        section: str, m: common.Measurement, batch: int | None, base: common.Measurement
    ) -> None:
        rows.append(
            {
                "section": section,
                "config": m.name,
                "batch": batch,
                "images_per_s": m.best_rate,
                "images_per_s_median": m.median_rate,
                "fraction_of_compute_limit": m.best_rate / limit,
                "ratio_vs_upstream": m.best_rate / base.best_rate,
                "baseline": base.name,
                "timing": m.to_json(),
            }
        )

    base = model["upstream session.run"]
    for name, m in model.items():
        batch = int(name.rsplit(" b", 1)[1]) if " b" in name else 1
        add("model", m, batch, base)
    for name, m in decoded.items():
        add("decoded", m, 1 if name == "upstream loop" else DEFAULT_BATCH, decoded["upstream loop"])
    base = e2e["upstream loop (decode full)"]
    for name, m in e2e.items():
        add("end-to-end", m, 1 if name.startswith("upstream") else DEFAULT_BATCH, base)

    print()
    print("model alone: pre-resized tensors; decoded: RGB frames -> detections;")
    print("end-to-end: 1280x720 JPEG bytes -> detections. 'vs upstream' = the section's first row.")
    common.print_table(
        ["section", "config", "batch", "images/s", "of compute limit", "vs upstream"],
        [
            [
                r["section"],
                r["config"],
                r["batch"],
                r["images_per_s"],
                r["fraction_of_compute_limit"],
                r["ratio_vs_upstream"],
            ]
            for r in rows
        ],
    )
    full_rate, auto_rate = decode["full"].best_rate, decode["auto"].best_rate
    print()
    common.print_table(
        ["JPEG decode 1280x720", "decoded size", "ms/frame", "frames/s", "vs full"],
        [
            ["full", f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}", 1000 / full_rate, full_rate, 1.0],
            [
                "auto (reduced)",
                f"{decoded_auto.rgb.shape[1]}x{decoded_auto.rgb.shape[0]}",
                1000 / auto_rate,
                auto_rate,
                auto_rate / full_rate,
            ],
        ],
    )

    default_model = model[f"tensorflow b{DEFAULT_BATCH}"]
    best_model = max(
        (m for n, m in model.items() if n.startswith("tensorflow")), key=lambda m: m.best_rate
    )
    e2e_speedup = (
        e2e["project default (decode auto, pool, b32)"].best_rate
        / e2e["upstream loop (decode full)"].best_rate
    )
    targets = {
        "model_fraction_of_compute_limit": {
            "config": default_model.name,
            "value": default_model.best_rate / limit,
            "target": TARGET_MODEL_FRACTION,
            "met": default_model.best_rate / limit >= TARGET_MODEL_FRACTION,
            "best_batch_config": best_model.name,
            "best_value": best_model.best_rate / limit,
        },
        "end_to_end_speedup_vs_upstream": {
            "config": "project default (decode auto, pool, b32)",
            "value": e2e_speedup,
            "target": TARGET_E2E_SPEEDUP,
            "met": e2e_speedup >= TARGET_E2E_SPEEDUP,
        },
    }
    print()
    for key, t in targets.items():
        verdict = "met" if t["met"] else "NOT met"
        print(f"# target {key}: {t['value']:.2f} (target {t['target']}) -> {verdict}")

    payload = {
        "benchmark": "model",
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**common.machine_info(threads), "load_average_at_start": load_at_start},
        "settings": {
            "threads": threads,
            "inter_op_threads": 1,
            "frames": len(frames),
            "rounds": rounds,
            "conf": CONF,
            "iou": IOU,
            "default_batch": DEFAULT_BATCH,
            "decode_workers": DECODE_WORKERS,
            "runtimes": ["tensorflow", *others],
        },
        "frames": {
            "source": source,
            "size": list(FRAME_SIZE),
            "jpeg_quality": JPEG_QUALITY,
            "mean_bytes": float(np.mean([len(f) for f in frames])),
        },
        "matmul": {**peak.to_json(), "measured_gflops": [p.gflops for p in peaks]},
        "compute_limit_images_per_s": limit,
        "decode": {
            "full": {**decode["full"].to_json(), "ms_per_frame": 1000 / full_rate},
            "auto": {
                **decode["auto"].to_json(),
                "ms_per_frame": 1000 / auto_rate,
                "decoded_size": [decoded_auto.rgb.shape[1], decoded_auto.rgb.shape[0]],
            },
            "speedup_auto_vs_full": auto_rate / full_rate,
        },
        "rows": rows,
        "targets": targets,
        "seconds": time.perf_counter() - started,
    }
    path = common.write_results("model", payload, args.output)
    print(f"# wrote {path} in {payload['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
