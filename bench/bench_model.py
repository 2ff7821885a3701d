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
variants when they have been built. TensorFlow bf16 (oneDNN mixed precision, the inference
service's default where the CPU has native bf16) is process-wide, so it runs in a
:mod:`bench.model_worker` child whose rounds interleave with the others all the same.
The decoded section also measures tiled inference (``--tiles 2x2``: five model runs per
frame), and each runtime / precision gets its dev-set AP50 (``accuracy`` in the JSON).

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

import numpy as np

from bench import common
from bench.model_worker import WorkerClient, WorkerError
from bench.model_workloads import (
    CONF,
    DECODE_WORKERS,
    DEFAULT_BATCH,
    FRAME_SIZE,
    IOU,
    JPEG_QUALITY,
    THREAD_OPTIONS,
    make_frames,
    model_loop,
    project_end_to_end,
    run_workload,
)

BATCH_SIZES = (1, 4, 8, 16, 32, 64)
TILES = "2x2"
WORKER_BATCHES = (1, 16, 32, 64)
QUICK_ACCURACY_IMAGES = 6
TARGET_REDUCED_PRECISION_SPEEDUP = 1.5  # issue: >= 1.5x float32 TF with AP50 within 0.01
MAX_AP50_DROP = 0.01
TARGET_MODEL_FRACTION = 0.85
TARGET_E2E_SPEEDUP = 1.6


def _other_runtimes(threads: int) -> dict[str, Any]:
    """Every registered runtime besides tensorflow that loads here, as detectors.

    For ``tflite`` also its other configurations at the same total thread count: one
    interpreter per thread (``interpreters``), and the ``float32`` / ``int8`` variants when
    ``facemask models build`` has made them. The first entry of a runtime is its default.
    """
    from facemask.model.detector import create_detector
    from facemask.model.runtime import available_runtimes

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


def _workers(threads: int, frames: int, source: str) -> dict[str, Any]:
    """Configurations that need a process of their own (:mod:`bench.model_worker`):
    TensorFlow bf16, where the CPU computes bf16 natively (elsewhere it is emulated)."""
    from facemask.model.runtime.base import native_bf16

    if not native_bf16():
        print("# tensorflow bf16: not measured (this CPU has no native bf16)")
        return {}
    try:
        worker = WorkerClient({"precision": "bf16"}, frames, source, threads)
    except WorkerError as exc:
        print(f"# tensorflow bf16: not measured ({exc})")
        return {}
    return {"tensorflow bf16": worker}


# accuracy config -> (model-alone row, decoded row) measured for it
_SPEED_ROWS = {
    "tensorflow float32": (f"tensorflow b{DEFAULT_BATCH}", "detector.detect"),
    f"tensorflow float32 tiles {TILES}": ("", f"detector.detect tiles {TILES}"),
    "tensorflow bf16": (f"tensorflow bf16 b{DEFAULT_BATCH}", "tensorflow bf16 detect"),
    f"tensorflow bf16 tiles {TILES}": ("", f"tensorflow bf16 detect tiles {TILES}"),
    "tflite": (f"tflite b{DEFAULT_BATCH}", ""),
    "tflite float32": (f"tflite float32 b{DEFAULT_BATCH}", ""),
    "tflite int8": (f"tflite int8 b{DEFAULT_BATCH}", "tflite int8 detect"),
    f"tflite int8 tiles {TILES}": ("", f"tflite int8 detect tiles {TILES}"),
}


def _accuracy_rows(
    acc: dict[str, dict[str, Any]],
    model: dict[str, common.Measurement],
    decoded: dict[str, common.Measurement],
) -> list[dict[str, Any]]:
    """One row per accuracy config: its AP figures beside its measured speeds."""
    base = decoded.get("detector.detect")
    rows = []
    for name, figures in acc.items():
        model_row, decoded_row = _SPEED_ROWS.get(name, ("", ""))
        m = model.get(model_row)
        d = decoded.get(decoded_row)
        rows.append(
            {
                "config": name,
                **figures,
                "model_images_per_s": m.best_rate if m else None,
                "detect_frames_per_s": d.best_rate if d else None,
                "detect_vs_float32": d.best_rate / base.best_rate if d and base else None,
            }
        )
    return rows


def _target(config: str, value: float, target: float) -> dict[str, Any]:
    """One target's JSON: the measured value against the goal (higher is better)."""
    return {"config": config, "value": value, "target": target, "met": value >= target}


def _targets(
    model: dict[str, common.Measurement],
    e2e: dict[str, common.Measurement],
    acc: dict[str, dict[str, Any]],
    limit: float,
) -> dict[str, dict[str, Any]]:
    """The issues' targets: model alone >= 0.85 of the compute limit and end to end >= 1.6x
    the upstream loop, for the CLI's reference-exact default (TensorFlow float32) and for the
    inference service's default (TensorFlow, precision auto: bf16 where the CPU has it);
    and >= 1.5x the float32 TensorFlow rate for a reduced precision whose AP50 stays within
    0.01 of float32."""
    service = "tensorflow bf16" if f"tensorflow bf16 b{DEFAULT_BATCH}" in model else "tensorflow"
    upstream_e2e = e2e["upstream loop (decode full)"].best_rate
    float32 = model[f"tensorflow b{DEFAULT_BATCH}"]
    targets: dict[str, dict[str, Any]] = {}
    for key, config in (
        ("cli_default", f"tensorflow b{DEFAULT_BATCH}"),
        ("service_default", f"{service} b{DEFAULT_BATCH}"),
    ):
        targets[f"{key}_model_fraction_of_compute_limit"] = _target(
            config, model[config].best_rate / limit, TARGET_MODEL_FRACTION
        )
    for key, config in (
        ("cli_default", "project default (decode auto, pool, b32)"),
        (
            "service_default",
            f"{service} (decode auto, pool, b32)"
            if service != "tensorflow"
            else "project default (decode auto, pool, b32)",
        ),
    ):
        targets[f"{key}_end_to_end_speedup_vs_upstream"] = _target(
            config, e2e[config].best_rate / upstream_e2e, TARGET_E2E_SPEEDUP
        )
    reference_ap50 = acc.get("tensorflow float32", {}).get("AP50")
    for name in ("tensorflow bf16", "tflite int8"):
        row = model.get(f"{name} b{DEFAULT_BATCH}")
        if row is None:
            continue
        speedup = row.best_rate / float32.best_rate
        ap50 = acc.get(name, {}).get("AP50")
        drop = None if ap50 is None or reference_ap50 is None else reference_ap50 - ap50
        targets[f"{name.replace(' ', '_')}_speedup_vs_float32"] = {
            "config": row.name,
            "value": speedup,
            "target": TARGET_REDUCED_PRECISION_SPEEDUP,
            "ap50_drop_vs_float32": drop,
            "met": speedup >= TARGET_REDUCED_PRECISION_SPEEDUP
            and drop is not None
            and abs(drop) <= MAX_AP50_DROP,
        }
    return targets


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
        "--no-accuracy", action="store_true", help="skip the dev-set AP50 of each configuration"
    )
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
    from facemask.core.preprocess import decode_image, preprocess_batch
    from facemask.model import store as modelstore
    from facemask.model.detector import create_detector

    # The project's runtime sets TensorFlow's process-wide pools: create it first.
    detector = create_detector(
        runtime="tensorflow", conf=CONF, iou=IOU, **THREAD_OPTIONS["tensorflow"](threads)
    )
    upstream = UpstreamTF(
        modelstore.artifact_path("face_mask_detection.pb"), threads=threads, inter_op_threads=1
    )
    others = _other_runtimes(threads)
    workers = _workers(threads, n_frames, args.source)

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
            lambda: model_loop(upstream.run_model, tensors, 1),
            len(tensors),
        )
    }
    for b in BATCH_SIZES:
        model_cfgs[f"tensorflow b{b}"] = (
            lambda b=b: model_loop(detector.infer, tensors, b),  # type: ignore[misc]
            len(tensors),
        )
    for name, other in others.items():
        # other runtimes (tflite: the model takes batch 1, a batch is a loop of invokes):
        # b1 and b32 for a runtime's default, b32 for its other configurations
        for b in (1, DEFAULT_BATCH) if name in THREAD_OPTIONS else (DEFAULT_BATCH,):
            model_cfgs[f"{name} b{b}"] = (
                lambda b=b, other=other: model_loop(other.infer, tensors, b),  # type: ignore[misc]
                len(tensors),
            )
    for name, worker in workers.items():
        for b in WORKER_BATCHES:
            model_cfgs[f"{name} b{b}"] = (worker.workload("model", batch=b), len(tensors))
    model = common.run_interleaved(model_cfgs, rounds)
    peaks.append(measure_peak())
    peak = common.best_peak(peaks)
    limit = peak.compute_limit_images_per_s
    print(
        f"# matmul peak {peaks[1].gflops:.1f} GFLOP/s after the model rows; best "
        f"{peak.gflops:.1f} -> compute limit {limit:.1f} images/s",
        flush=True,
    )

    # -- decoded frames -> detections (and the cost of tiling: 5 model runs per frame)
    with ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="decode") as pool:

        def local(det: Any, op: str, **op_args: Any) -> Callable[[], object]:
            return lambda: run_workload(
                det, op, op_args, frames=frames, rgb=rgb_frames, tensors=tensors, pool=pool
            )

        decoded_cfgs: dict[str, tuple[Callable[[], object], int]] = {
            "upstream loop": (
                lambda: [upstream.inference(rgb, CONF, IOU) for rgb in rgb_frames],
                len(rgb_frames),
            ),
            "detector.detect": (local(detector, "decoded"), len(rgb_frames)),
            f"detector.detect tiles {TILES}": (local(detector, "decoded", tiles=TILES), n_frames),
        }
        for name, worker in workers.items():
            decoded_cfgs[f"{name} detect"] = (worker.workload("decoded"), n_frames)
            decoded_cfgs[f"{name} detect tiles {TILES}"] = (
                worker.workload("decoded", tiles=TILES),
                n_frames,
            )
        if "tflite int8" in others:
            int8 = others["tflite int8"]
            decoded_cfgs["tflite int8 detect"] = (local(int8, "decoded"), n_frames)
            decoded_cfgs[f"tflite int8 detect tiles {TILES}"] = (
                local(int8, "decoded", tiles=TILES),
                n_frames,
            )
        decoded = common.run_interleaved(decoded_cfgs, rounds)

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
            if name not in THREAD_OPTIONS and name != "tflite int8":
                continue  # end-to-end: each runtime's default, and int8
            e2e_cfgs[f"{name} (decode auto, pool, b32)"] = (
                lambda other=other: project_end_to_end(other, frames, pool),  # type: ignore[misc]
                len(frames),
            )
        for name, worker in workers.items():
            e2e_cfgs[f"{name} (decode auto, pool, b32)"] = (worker.workload("e2e"), len(frames))
        e2e = common.run_interleaved(e2e_cfgs, rounds)

        # -- accuracy on the dev set of every runtime / precision (not timed)
        acc: dict[str, dict[str, Any]] = {}
        if not args.no_accuracy:
            acc_limit = QUICK_ACCURACY_IMAGES if quick else None
            acc_cfgs: dict[str, Callable[[], object]] = {
                "tensorflow float32": local(detector, "accuracy", limit=acc_limit),
                f"tensorflow float32 tiles {TILES}": local(
                    detector, "accuracy", tiles=TILES, limit=acc_limit
                ),
            }
            for name, worker in workers.items():
                acc_cfgs[name] = worker.workload("accuracy", limit=acc_limit)
                acc_cfgs[f"{name} tiles {TILES}"] = worker.workload(
                    "accuracy", tiles=TILES, limit=acc_limit
                )
            for name, other in others.items():
                if getattr(other.runtime, "interpreters", 1) > 1:
                    continue  # the same model as its single-interpreter row
                acc_cfgs[name] = local(other, "accuracy", limit=acc_limit)
            if "tflite int8" in others:
                acc_cfgs[f"tflite int8 tiles {TILES}"] = local(
                    others["tflite int8"], "accuracy", tiles=TILES, limit=acc_limit
                )
            for name, run in acc_cfgs.items():
                figures = run()
                if isinstance(figures, dict) and figures:
                    acc[name] = figures
                    print(f"# accuracy {name}: AP50 {figures['AP50']:.4f}", flush=True)
    upstream.close()
    for worker in workers.values():
        worker.close()

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

    accuracy_rows = _accuracy_rows(acc, model, decoded)
    if accuracy_rows:
        print()
        print(f"dev-set accuracy (COCO, {next(iter(acc.values()))['images']} images) and speed")
        common.print_table(
            [
                "config",
                "AP50",
                "AP50 float boxes",
                "AP_small",
                "model/s b32",
                "detect fr/s",
                "vs TF float32",
            ],
            [
                [
                    r["config"],
                    r["AP50"],
                    r["AP50_unrounded"],
                    r["AP_small"],
                    r["model_images_per_s"],
                    r["detect_frames_per_s"],
                    r["detect_vs_float32"],
                ]
                for r in accuracy_rows
            ],
        )
    targets = _targets(model, e2e, acc, limit)
    print()
    for key, t in targets.items():
        verdict = "met" if t["met"] else "NOT met"
        print(
            f"# target {key} ({t['config']}): {t['value']:.2f} (target {t['target']}) -> {verdict}"
        )

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
            "runtimes": ["tensorflow", *others, *workers],
            "tiles": TILES,
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
        "accuracy": accuracy_rows,
        "targets": targets,
        "seconds": time.perf_counter() - started,
    }
    path = common.write_results("model", payload, args.output)
    print(f"# wrote {path} in {payload['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
