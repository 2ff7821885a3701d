"""Ingest node footprint: CPU time per frame, peak RSS, JPEG bytes per frame.

``python -m bench.bench_ingest`` (``make bench-ingest``; ``--quick`` for a smoke run) runs
the real ingest node (``IngestWorker``: source, rate cap, resize, JPEG, publisher, registry)
against a local ``redis-server`` for each configuration:

* source: a 1280x720 30 fps H.264 file (the sample video upscaled; a synthetic clip when it
  is missing or ffmpeg is not installed), looping, played in real time. The node grabs and
  decodes every source frame like it does for an RTSP camera and keeps 5 or 15 per second;
* each configuration runs in its **own child process** so its peak RSS (``VmHWM``) is its
  own; CPU time is ``time.process_time()`` of the child (all its threads) over the measured
  window after a warm-up, divided by the frames published in that window.

Reported per configuration: achieved fps, CPU ms per published frame, CPU % of one core,
mean encode ms, mean JPEG bytes per frame (default quality 80), peak RSS. Also the JPEG size
of the same frames at a few qualities. Results: a table on stdout and
``bench/results/ingest.json`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench import common

VIDEO = common.VIDEO
SIZE = (1280, 720)
SOURCE_FPS = 30
RATES = (5, 15)
QUALITIES = (60, 70, 80, 90)


# -- source clip --------------------------------------------------------------------------
def make_source(folder: Path, seconds: float) -> tuple[Path, str]:
    """A 1280x720 30 fps clip of ``seconds``; returns its path and a description."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg and VIDEO.is_file():
        out = folder / "source_720p.mp4"
        cmd = [ffmpeg, "-y", "-hide_banner", "-loglevel", "error", "-i", str(VIDEO)]
        cmd += ["-t", f"{seconds:.2f}", "-vf", f"scale={SIZE[0]}:{SIZE[1]},fps={SOURCE_FPS}"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-g", "30"]
        cmd += ["-pix_fmt", "yuv420p", "-an", str(out)]
        if subprocess.run(cmd, check=False, timeout=300).returncode == 0:
            return out, f"{VIDEO.name} upscaled, H.264 {SIZE[0]}x{SIZE[1]} {SOURCE_FPS} fps"
    out = folder / "source_720p.avi"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), SOURCE_FPS, SIZE)
    capture = cv2.VideoCapture(str(VIDEO)) if VIDEO.is_file() else None
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (SIZE[1] // 8, SIZE[0] // 8, 3), dtype=np.uint8)
    base: np.ndarray = cv2.resize(small, SIZE, interpolation=cv2.INTER_CUBIC)
    for i in range(int(seconds * SOURCE_FPS)):
        frame = None
        if capture is not None:
            ok, frame = capture.read()
            frame = cv2.resize(frame, SIZE) if ok else None
        if frame is None:
            frame = np.roll(base, 8 * i, axis=1)
        writer.write(frame)
    writer.release()
    kind = "sample video upscaled" if capture is not None else "synthetic"
    return out, f"{kind}, MJPEG {SIZE[0]}x{SIZE[1]} {SOURCE_FPS} fps (no ffmpeg)"


def jpeg_sizes(source: Path, frames: int = 12) -> dict[str, float]:
    """Mean JPEG bytes of source frames at each of :data:`QUALITIES`."""
    capture = cv2.VideoCapture(str(source))
    images: list[np.ndarray] = []
    step = max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 30) // frames)
    index = 0
    while len(images) < frames:
        ok = capture.grab()
        if not ok:
            break
        if index % step == 0:
            images.append(capture.retrieve()[1])
        index += 1
    capture.release()
    out = {}
    for quality in QUALITIES:
        sizes = [
            len(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]) for im in images
        ]
        out[str(quality)] = float(np.mean(sizes)) if sizes else 0.0
    return out


# -- child: one configuration ----------------------------------------------------------------
def peak_rss_mib() -> float:
    """Peak resident set size of this process (``VmHWM``), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Run the node on ``args.source`` at ``args.fps``; measure after ``args.warmup``."""
    from services.ingest.config import IngestSettings
    from services.ingest.metrics import IngestMetrics
    from services.ingest.worker import IngestWorker

    settings = IngestSettings.load(
        redis_url=args.redis_url,
        cameras=[f"id=bench,source={args.source},fps={args.fps},loop=true"],
        node_name="bench",
        log_level="WARNING",
    )
    metrics = IngestMetrics()
    worker = IngestWorker(settings, metrics=metrics)
    labels = {"camera_id": "bench"}

    def sample() -> tuple[float, float, float, float, float, float]:
        return (
            time.perf_counter(),
            time.process_time(),
            metrics.value("facemask_ingest_frames_published_total", labels),
            metrics.value("facemask_ingest_published_bytes_total", labels),
            metrics.value("facemask_ingest_encode_seconds_sum", labels),
            metrics.value("facemask_ingest_encode_seconds_count", labels),
        )

    worker.start()
    time.sleep(args.warmup)
    t0, cpu0, pub0, bytes0, enc0, encn0 = sample()
    time.sleep(args.seconds)
    t1, cpu1, pub1, bytes1, enc1, encn1 = sample()
    code = worker.shutdown()
    frames = pub1 - pub0
    wall = t1 - t0
    cpu = cpu1 - cpu0
    return {
        "fps_target": args.fps,
        "exit_code": code,
        "seconds": wall,
        "frames_published": frames,
        "fps_achieved": frames / wall if wall else 0.0,
        "cpu_seconds": cpu,
        "cpu_ms_per_frame": 1000 * cpu / frames if frames else None,
        "cpu_percent_of_one_core": 100 * cpu / wall if wall else None,
        "encode_ms_mean": 1000 * (enc1 - enc0) / (encn1 - encn0) if encn1 > encn0 else None,
        "jpeg_bytes_per_frame": (bytes1 - bytes0) / frames if frames else None,
        "jpeg_quality": settings.cameras[0].quality,
        "peak_rss_mib": peak_rss_mib(),
        "dropped": {
            reason: metrics.value(
                "facemask_ingest_frames_dropped_total", {**labels, "reason": reason}
            )
            for reason in ("rate_cap", "buffer_full", "redis_error")
        },
    }


# -- parent ----------------------------------------------------------------------------------
def measure(
    source: Path, fps: int, redis_url: str, seconds: float, warmup: float
) -> dict[str, Any]:
    """One configuration in a fresh child process."""
    cmd = [sys.executable, "-m", "bench.bench_ingest", "--child", "--source", str(source)]
    cmd += ["--fps", str(fps), "--redis-url", redis_url]
    cmd += ["--seconds", str(seconds), "--warmup", str(warmup)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEMASK_INGEST_")}
    proc = subprocess.run(
        cmd,
        cwd=common.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + warmup + 120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"child for {fps} fps failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    """What the numbers were measured on (no TensorFlow import)."""
    return {
        "cpu_model": common.cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": common.default_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ingest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--seconds", type=float, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, help="seconds before measuring")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--fps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)), flush=True)
        return 0

    seconds = args.seconds or (2.0 if args.quick else 20.0)
    warmup = args.warmup or (1.0 if args.quick else 3.0)
    from facemask.dev.localredis import RedisProcess

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        source, description = make_source(folder, 4.0 if args.quick else 10.0)
        with RedisProcess(folder / "redis") as redis_server:
            rows = [measure(source, fps, redis_server.url, seconds, warmup) for fps in RATES]
        by_quality = jpeg_sizes(source)

    headers = [
        "fps",
        "achieved",
        "cpu ms/frame",
        "cpu % core",
        "encode ms",
        "JPEG KB",
        "peak RSS MiB",
    ]
    table = [
        [
            r["fps_target"],
            r["fps_achieved"],
            r["cpu_ms_per_frame"],
            r["cpu_percent_of_one_core"],
            r["encode_ms_mean"],
            (r["jpeg_bytes_per_frame"] or 0) / 1000,
            r["peak_rss_mib"],
        ]
        for r in rows
    ]
    print(f"ingest node, source: {description} (looping, real time)")
    common.print_table(headers, table)
    print(
        "JPEG KB per frame by quality: "
        + ", ".join(f"q{q}: {b / 1000:.1f}" for q, b in by_quality.items())
    )
    payload = {
        "benchmark": "ingest",
        "quick": bool(args.quick),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "source": {
            "description": description,
            "width": SIZE[0],
            "height": SIZE[1],
            "fps": SOURCE_FPS,
        },
        "seconds_per_config": seconds,
        "warmup_seconds": warmup,
        "configs": rows,
        "jpeg_bytes_by_quality": by_quality,
        "notes": (
            "CPU includes decoding every source frame (30 fps H.264, like an RTSP camera), "
            "the rate cap, resize (none here), JPEG encode and XADD to a local redis-server. "
            "Each configuration ran in its own process; peak RSS is that process's VmHWM."
        ),
    }
    path = common.write_results("ingest", payload, args.output)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
