"""``make bench`` (pipeline): the whole pipeline on this machine, K cameras at 5 fps.

One run, same pre-encoded 1280x720 JPEG frames (cut from the sample video) throughout:

1. **Compute limit**: the float32 matmul peak / 1.52 GFLOP per image (bench.common).
2. **Per-frame loop**: the upstream reference script's loop on the frames, in this process.
3. **Pipeline**: Redis, the inference service and the alert service as child processes;
   K simulated cameras (K = 1, 2, 4, ... 64) publish frames at 5 fps each, in ingest's
   wire format, for ``--seconds``. Per K: sustained frames/s (status ok, the steady
   completion rate: after the queues fill, before the load stops), p50/p95/p99 from
   capture to the detections entry (the entry id's Redis time) and to the alert decision
   (the alert service's processing-lag gauge, sampled every 0.1 s), mean batch size, frames
   skipped (too old) or lost, CPU (% of one core) and peak RSS of every service.
4. **80 % load**: 8 cameras at 80 % of the best sustained rate: p99 latency.
5. **Model only**: the variant the inference service runs, alone at its batch size (16
   here) in a worker process after the pipeline stops, next to the best sustained rate
   and their ratio.

Writes ``bench/results/pipeline.json`` with ``pipeline_throughput.png`` and
``pipeline_p99.png`` (matplotlib) and prints the table. ``--quick`` is the CI smoke run.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.bench_inference import (
    Service,
    batch_mean,
    make_frames,
    model_summary,
    per_frame_loop,
    percentile,
    print_model_vs_service,
)
from bench.common import (
    RESULTS_DIR,
    ServiceChild,
    default_threads,
    machine_info,
    measure_matmul_gflops,
    print_table,
    scrape,
    steady_rate,
    write_results,
)
from bench.model_rate import model_only_rate, service_variant
from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.dev.localredis import RedisProcess, free_port

LAYOUT = StreamLayout("facemask", 4)
FRAME_SIZE = (1280, 720)
DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64)
TARGETS = {"fraction_of_limit": 0.7, "p99_ms_at_80pct": 250.0}
SERVICE_ENV = {"FACEMASK_INFERENCE_MAX_BATCH_SIZE": "16", "FACEMASK_INFERENCE_READ_BLOCK": "0.02"}


def ms(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile of ``values`` (seconds) in milliseconds, None when empty."""
    value = percentile(values, q)
    return None if math.isnan(value) else value * 1e3


class ProcStat:
    """CPU seconds and peak RSS of one process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_mib = 0.0
        self._cpu0 = self.cpu_seconds()
        self._t0 = time.monotonic()

    def cpu_seconds(self) -> float:
        try:
            parts = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def sample(self) -> None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_rss_mib = max(self.peak_rss_mib, int(line.split()[1]) / 1024)
        except OSError:
            pass

    def cpu_percent(self) -> float:
        elapsed = max(1e-6, time.monotonic() - self._t0)
        return 100.0 * (self.cpu_seconds() - self._cpu0) / elapsed


class Alerts(ServiceChild):
    """``python -m services.alerts`` as a child process."""

    def __init__(self, redis_url: str, state_dir: Path) -> None:
        self.port = free_port()
        super().__init__(
            "services.alerts",
            {
                "FACEMASK_REDIS_URL": redis_url,
                "FACEMASK_ALERTS_HOST": "127.0.0.1",
                "FACEMASK_ALERTS_PORT": str(self.port),
                "FACEMASK_ALERTS_STATE_DIR": str(state_dir),
                "FACEMASK_ALERTS_GROUP_START": "0",
                "FACEMASK_ALERTS_READ_BLOCK": "0.05",
                "FACEMASK_LOG_LEVEL": "WARNING",
            },
            drop_prefix="FACEMASK_ALERTS_",
            metrics_port=self.port,  # the API serves /metrics too
            ready_metric="facemask_alerts_ready",
        )


@dataclass
class RunResult:
    """One load level."""

    k: int
    fps_per_camera: float
    offered_per_s: float
    published: int
    sustained_per_s: float
    ok: int
    skipped: int
    lost: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    alert_p50_ms: float | None
    alert_p95_ms: float | None
    alert_p99_ms: float | None
    mean_batch: float | None
    services: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Sustained: every frame processed, none skipped or lost."""
        return self.skipped == 0 and self.lost == 0 and self.published > 0


def run_load(
    redis_url: str,
    inference: Service,
    alerts: Alerts,
    pids: dict[str, int],
    frames: list[bytes],
    k: int,
    fps: float,
    seconds: float,
    tag: str,
) -> RunResult:
    """``k`` cameras at ``fps`` for ``seconds``; then wait (bounded) for the results."""
    import redis

    client: Any = redis.Redis.from_url(redis_url)
    ids = [f"{tag}-k{k}-c{c}" for c in range(k)]
    period = 1.0 / fps
    start_ms = int(time.time() * 1000)
    stop_at = time.time() + seconds
    published = 0
    stats = {name: ProcStat(pid) for name, pid in pids.items()}
    alert_lags: list[float] = []
    done = threading.Event()

    def publisher() -> tuple[float, float]:
        """Publish the load; returns when it started and stopped."""
        nonlocal published
        pub: Any = redis.Redis.from_url(redis_url)
        t0 = time.time()
        n = 0
        while True:
            tick = t0 + n * period
            if tick >= stop_at:
                break
            pipe = pub.pipeline(transaction=False)
            for c, cam in enumerate(ids):
                due = tick + c * period / k
                delay = due - time.time()
                if delay > 0.002:
                    pipe.execute()
                    pipe = pub.pipeline(transaction=False)
                    time.sleep(delay)
                entry = FrameEntry(
                    cam, n, time.time(), "jpeg", *FRAME_SIZE, frames[(n + c) % len(frames)]
                )
                fields: Any = entry.to_fields()
                pipe.xadd(LAYOUT.frames_for(cam), fields, maxlen=2000, approximate=True)
                published += 1
            pipe.execute()
            n += 1
        pub.close()
        return t0, time.time()

    def sampler() -> None:
        while not done.wait(0.1):
            for stat in stats.values():
                stat.sample()
            try:
                lag = scrape(alerts.port).get("facemask_alerts_processing_lag_seconds")
            except OSError:
                continue
            if lag is not None:
                alert_lags.append(lag)

    before = inference.scrape()
    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    try:
        load_start, load_end = publisher()  # here, not on a thread: its failure fails the run
    except BaseException:
        done.set()
        raise
    deadline = time.time() + 15

    def collect() -> list[tuple[float, DetectionsEntry]]:
        out = []
        for key in LAYOUT.all_detections():
            for sid, fields in client.xrange(key, min=f"{start_ms}-0"):
                entry = DetectionsEntry.from_fields(fields)
                if entry.camera_id in ids:
                    out.append((int(sid.split(b"-")[0]) / 1000.0, entry))
        return out

    entries = collect()
    while len(entries) < published and time.time() < deadline:
        time.sleep(0.2)
        entries = collect()
    done.set()
    sampling.join()
    after = inference.scrape()
    services = {
        name: {"cpu_percent": stat.cpu_percent(), "peak_rss_mib": stat.peak_rss_mib}
        for name, stat in stats.items()
    }
    for key in LAYOUT.all_frames():
        client.xtrim(key, maxlen=0)  # free the frames; the consumer groups stay
    client.close()
    ok = [(at, e) for at, e in entries if e.status == "ok"]
    skipped = len(entries) - len(ok)
    latencies = [at - e.capture_ts for at, e in ok]
    mean_batch = batch_mean(before, after)
    return RunResult(
        k=k,
        fps_per_camera=fps,
        offered_per_s=k * fps,
        published=published,
        sustained_per_s=steady_rate([at for at, _ in ok], load_start, load_end),
        ok=len(ok),
        skipped=skipped,
        lost=max(0, published - len(entries)),
        p50_ms=ms(latencies, 50),
        p95_ms=ms(latencies, 95),
        p99_ms=ms(latencies, 99),
        alert_p50_ms=ms(alert_lags, 50),
        alert_p95_ms=ms(alert_lags, 95),
        alert_p99_ms=ms(alert_lags, 99),
        mean_batch=None if math.isnan(mean_batch) else mean_batch,
        services=services,
    )


def plot(results: list[RunResult], loop_fps: float, limit: float, out_dir: Path) -> list[Path]:
    """Throughput and p99 latency against K (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r.k for r in results]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r.offered_per_s for r in results], "k:", label="offered (K x 5 fps)")
    ax.plot(ks, [r.sustained_per_s for r in results], "o-", label="pipeline (status ok)")
    ax.axhline(loop_fps, color="tab:red", ls="--", label="upstream per-frame loop")
    ax.axhline(limit, color="tab:gray", ls="-.", label="compute limit")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("cameras K")
    ax.set_ylabel("frames/s")
    ax.set_title("Pipeline throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "pipeline_throughput.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [r.p99_ms or math.nan for r in results], "o-", label="p99 capture -> detections")
    ax.plot(ks, [r.alert_p99_ms or math.nan for r in results], "s-", label="p99 capture -> alert")
    ax.axhline(TARGETS["p99_ms_at_80pct"], color="tab:red", ls="--", label="250 ms goal")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cameras K")
    ax.set_ylabel("ms")
    ax.set_title("Pipeline p99 latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "pipeline_p99.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 60 s)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--seconds", type=float, default=None, help="per load level")
    parser.add_argument("--ks", default=None, help="comma-separated camera counts")
    parser.add_argument("--fps", type=float, default=5.0, help="frames/s per camera")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")] if args.ks else ([1, 2] if args.quick else DEFAULT_KS)
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    out_dir: Path = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = make_frames(6 if args.quick else 24, FRAME_SIZE)
    matmul = measure_matmul_gflops(args.threads, sizes=(2048,), repeats=2 if args.quick else 5)
    limit = matmul.compute_limit_images_per_s
    loop = per_frame_loop(frames, args.threads, 2.0 if args.quick else 10.0)
    print(f"compute limit {limit:.1f} img/s; upstream loop {loop.frames_per_s:.1f} frames/s")
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    redis = RedisProcess(work / "redis").start()
    inference = Service(redis.url, args.threads, **SERVICE_ENV)
    alerts = Alerts(redis.url, work / "alerts")
    results: list[RunResult] = []
    try:
        inference.wait_ready()
        alerts.wait_ready()
        variant = service_variant(inference.metrics_port)
        assert redis.proc is not None
        pids = {"inference": inference.proc.pid, "alerts": alerts.proc.pid}
        pids["redis"] = redis.proc.pid
        for k in ks:
            result = run_load(
                redis.url, inference, alerts, pids, frames, k, args.fps, seconds, "bench"
            )
            results.append(result)
            print(
                f"K={k:3d} offered {result.offered_per_s:6.1f}/s sustained "
                f"{result.sustained_per_s:6.1f}/s p99 {result.p99_ms or math.nan:7.1f} ms "
                f"skipped {result.skipped} lost {result.lost}",
                flush=True,
            )
        best = max(r.sustained_per_s for r in results)
        target = 0.8 * best
        k80 = max(1, min(8, round(target / args.fps)))
        at80 = run_load(
            redis.url, inference, alerts, pids, frames, k80, target / k80, seconds, "bench80"
        )
    finally:
        alerts.stop()
        inference.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    model = model_only_rate(
        *variant,
        env=SERVICE_ENV,
        threads=args.threads,
        batch=int(SERVICE_ENV["FACEMASK_INFERENCE_MAX_BATCH_SIZE"]),
        seconds=2.0 if args.quick else 10.0,
    )
    clean = [r.k for r in results if r.clean]
    summary = {
        "compute_limit_images_per_s": limit,
        "upstream_loop_fps": loop.frames_per_s,
        "best_sustained_fps": best,
        "fraction_of_compute_limit": best / limit,
        "ratio_to_upstream_loop": best / loop.frames_per_s,
        "largest_k_without_skips": max(clean) if clean else None,
        "load_80pct": asdict(at80),
        "p99_ms_at_80pct": at80.p99_ms,
        **model_summary(model, best),
        "targets": TARGETS,
    }
    headers = ["K", "offered/s", "fps", "p50 ms", "p95 ms", "p99 ms", "alert p99 ms"]
    headers += ["batch", "skipped", "lost", "inf CPU%", "inf RSS MiB", "alerts CPU%", "redis CPU%"]
    rows = [
        [
            r.k,
            r.offered_per_s,
            r.sustained_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.alert_p99_ms,
            r.mean_batch,
            r.skipped,
            r.lost,
            r.services["inference"]["cpu_percent"],
            r.services["inference"]["peak_rss_mib"],
            r.services["alerts"]["cpu_percent"],
            r.services["redis"]["cpu_percent"],
        ]
        for r in results
    ]
    print_table(headers, rows)
    print(
        f"largest K without skipped frames: {summary['largest_k_without_skips']}; "
        f"pipeline/loop = {summary['ratio_to_upstream_loop']:.2f}; "
        f"fraction of compute limit = {summary['fraction_of_compute_limit']:.2f}; "
        f"p99 at 80% load ({at80.offered_per_s:.1f}/s) = {at80.p99_ms or math.nan:.0f} ms"
    )
    print_model_vs_service(model, best)
    pngs = plot(results, loop.frames_per_s, limit, out_dir)
    payload = {
        "machine": machine_info(args.threads),
        "matmul": matmul.to_json(),
        "quick": args.quick,
        "seconds_per_level": seconds,
        "fps_per_camera": args.fps,
        "frame_size": list(FRAME_SIZE),
        "upstream_loop": asdict(loop),
        "results": [asdict(r) | {"clean": r.clean} for r in results],
        "summary": summary,
        "plots": [p.name for p in pngs],
    }
    path = write_results("pipeline", payload, out_dir / "pipeline.json")
    print(f"wrote {path} and {', '.join(str(p) for p in pngs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
