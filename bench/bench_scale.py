"""``make bench-scale``: inference replicas pinned to one core each, and Redis's cost per frame.

Issue 15 item 5. Measured in one run, rounds interleaved (1 replica, 2 replicas, 1, 2, ...):

1. **Backlog, then drain.** A fresh ``redis-server`` gets ``--backlog`` real JPEG frames
   (cut from the sample video, resized to 1280x720, JPEG quality 80 as an ingest node
   sends them) in its frame streams, one ``XADD ... MAXLEN ~`` per round trip like an
   ingest node, **before** any replica starts: no producer runs while the replicas are
   measured, so on a small machine the load generator takes no core from them. The
   replicas run with ``max_frame_age`` of a day, so the backlog is processed, not skipped
   as too old.
2. **Replicas pinned.** N inference services (``python -m services.inference``, the
   service's defaults: runtime ``auto``, dynamic batching) each start with the CPU affinity
   of one core (set on the benchmark's thread for the ``fork``; every thread of the child
   inherits it, checked from ``/proc/<pid>/task`` after the run) and ``threads=1``. Their
   ``auto`` choice is measured for one thread once per run (a private model cache
   directory, so the shared cache keeps its own figures) and reported.
3. **Drain rate.** Once every replica reports ready, after ``--settle`` seconds: frames
   with a published detections entry (``facemask_frames_processed_total``, status ok) per
   second over a steady window of ``--window`` seconds, ended early (and measured up to
   then) when the unread backlog falls below what the replicas hold in flight. The
   throughput ratio is the best 2-replica round over the best 1-replica round (goal >= 1.9).
4. **Redis's own cost per frame**, from the ``redis-server`` process (``/proc/<pid>/stat``
   utime + stime), ``INFO stats`` (``total_net_input_bytes`` / ``total_net_output_bytes``)
   and ``INFO commandstats`` (calls and microseconds per command; a script's ``EVALSHA``
   includes the commands it runs), in three phases:

   - **ingest**: the backlog's ``XADD`` s (per frame written);
   - **inference**: the replicas' drain window: ``XREADGROUP``, the publish script
     (``XPENDING`` ownership check, detections ``XADD``, ``XACK``), plus their periodic
     ``XAUTOCLAIM`` / ``XINFO`` (per frame processed);
   - **alerts**: the real alert service consuming every detections entry of the last
     round (``XREADGROUP``, ``XACK``, a frame ``XRANGE`` per alert snapshot; per entry).

   Memory per stream entry comes from ``MEMORY USAGE`` of the streams over their length.
   The benchmark's own polling (``XINFO GROUPS`` twice a second) is counted in; it is
   negligible.

5. **Capacity plan**: the figures above turned into cameras per replica core, frames and
   replicas per Redis master and cluster sizes for 100, 1,000 and 10,000 cameras at 5 fps,
   under stated headroom (``--replica-load``, ``--redis-budget``).

Writes ``bench/results/scale.json`` and prints the tables. ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.bench_inference import LAYOUT, Service, make_frames
from bench.bench_pipeline import Alerts, ProcStat
from bench.common import machine_info, print_table, write_results
from facemask.contracts.wire import FrameEntry
from facemask.core.preprocess import jpeg_size
from facemask.dev.localredis import RedisProcess
from facemask.model import store as modelstore
from facemask.model.variants import CACHE_FILE
from services.inference.config import InferenceSettings
from services.ingest.config import DEFAULT_QUALITY

FRAME_SIZE = (1280, 720)
CAMERA_FPS = 5.0
CAMERA_COUNTS = (100, 1_000, 10_000)
RATIO_GOAL = 1.9
MAX_INFLIGHT = int(InferenceSettings.model_fields["max_inflight"].default)
"""Frames a replica reads ahead of its publishing (the service's default)."""
MIN_CLUSTER_MASTERS = 3
"""A Redis Cluster fails a master over by a majority of masters: three at least."""
INFERENCE_GROUP = "inference"
ALERTS_GROUP = "alerts"
SERVICE_ENV = {
    "FACEMASK_INFERENCE_MAX_FRAME_AGE": "86400",  # the backlog is run, not skipped as too old
    "FACEMASK_INFERENCE_DETECTIONS_MAXLEN": "10000000",  # every detections entry stays
}
METHOD = (
    "backlog of {backlog} JPEG frames ({width}x{height}, quality {quality}, {kb:.0f} KB mean) "
    "in the frame streams before the replicas start (no producer during the measurement), "
    "max_frame_age 1 day; drain rate = frames with a detections entry (status ok) per second "
    "over a {window:g} s window after every replica is ready (+{settle:g} s); each replica "
    "pinned to one core, threads=1"
)


# -- redis probes -------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisSample:
    """The redis-server's counters at one moment."""

    at: float
    cpu_seconds: float
    net_in: int
    net_out: int
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)


def redis_sample(client: Any, pid: int) -> RedisSample:
    """CPU seconds of the server process (``/proc``), its network byte counters and
    per-command statistics."""
    stats = client.info("stats")
    commands = {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in client.info("commandstats").items()
    }
    return RedisSample(
        time.monotonic(),
        ProcStat(pid).cpu_seconds(),
        int(stats["total_net_input_bytes"]),
        int(stats["total_net_output_bytes"]),
        commands,
    )


@dataclass
class RedisCost:
    """What Redis spent on one phase, per unit (frame written, frame processed, entry read)."""

    phase: str
    units: int
    seconds: float
    cpu_seconds: float
    net_in: int
    net_out: int
    commands: dict[str, dict[str, float]] = field(default_factory=dict)
    service_rate: float | None = None
    """Units per second of the consumer measured (the alert service: entries read per
    second from its readiness to its last acknowledgement; it may have read some before)."""

    @property
    def cpu_us_per_unit(self) -> float:
        """Server CPU microseconds per unit."""
        return 1e6 * self.cpu_seconds / self.units if self.units else math.nan

    @property
    def in_bytes_per_unit(self) -> float:
        """Bytes the server received per unit."""
        return self.net_in / self.units if self.units else math.nan

    @property
    def out_bytes_per_unit(self) -> float:
        """Bytes the server sent per unit."""
        return self.net_out / self.units if self.units else math.nan

    @property
    def cpu_percent(self) -> float:
        """Server CPU over the phase, in % of one core."""
        return 100.0 * self.cpu_seconds / self.seconds if self.seconds > 0 else math.nan

    def to_json(self) -> dict[str, Any]:
        """JSON form, with the per-unit figures."""
        return {
            **asdict(self),
            "cpu_us_per_unit": self.cpu_us_per_unit,
            "in_bytes_per_unit": self.in_bytes_per_unit,
            "out_bytes_per_unit": self.out_bytes_per_unit,
            "cpu_percent": self.cpu_percent,
        }


def redis_cost(phase: str, before: RedisSample, after: RedisSample, units: int) -> RedisCost:
    """The difference of two samples, per ``units``."""
    commands: dict[str, dict[str, float]] = {}
    for name, (calls, usec) in after.commands.items():
        calls0, usec0 = before.commands.get(name, (0, 0))
        if calls > calls0 and units:
            commands[name] = {
                "calls_per_unit": (calls - calls0) / units,
                "us_per_unit": (usec - usec0) / units,
            }
    return RedisCost(
        phase,
        units,
        after.at - before.at,
        after.cpu_seconds - before.cpu_seconds,
        after.net_in - before.net_in,
        after.net_out - before.net_out,
        commands,
    )


def sum_costs(phase: str, costs: Sequence[RedisCost]) -> RedisCost:
    """Several measurements of one phase as one (totals over totals)."""
    total = RedisCost(phase, 0, 0.0, 0.0, 0, 0)
    calls: dict[str, list[float]] = {}
    for cost in costs:
        total.units += cost.units
        total.seconds += cost.seconds
        total.cpu_seconds += cost.cpu_seconds
        total.net_in += cost.net_in
        total.net_out += cost.net_out
        for name, c in cost.commands.items():
            acc = calls.setdefault(name, [0.0, 0.0])
            acc[0] += c["calls_per_unit"] * cost.units
            acc[1] += c["us_per_unit"] * cost.units
    total.commands = {
        name: {"calls_per_unit": n / total.units, "us_per_unit": us / total.units}
        for name, (n, us) in sorted(calls.items())
    }
    return total


def stream_memory(client: Any, keys: Sequence[str]) -> dict[str, float]:
    """Entries and bytes (``MEMORY USAGE ... SAMPLES 0``: every node) of ``keys``."""
    entries = sum(int(client.xlen(k)) for k in keys)
    nbytes = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    return {
        "entries": entries,
        "bytes": nbytes,
        "bytes_per_entry": nbytes / entries if entries else math.nan,
    }


def group_backlog(client: Any, keys: Sequence[str], group: str) -> tuple[int, int]:
    """``(lag, pending)`` of consumer group ``group`` over ``keys``: entries not yet read,
    and read but not acknowledged."""
    lag = pending = 0
    for key in keys:
        for info in client.xinfo_groups(key):
            if info["name"].decode() == group:
                lag += int(info.get("lag") or 0)
                pending += int(info["pending"])
    return lag, pending


# -- the replicas -------------------------------------------------------------------------


@contextlib.contextmanager
def pinned(cores: set[int]) -> Iterator[None]:
    """Run the block with this thread's CPU affinity set to ``cores``: a child process
    started in it inherits the affinity (every thread it starts, too)."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def process_cores(pid: int) -> list[int]:
    """The cores any thread of ``pid`` may run on (union over ``/proc/<pid>/task``)."""
    cores: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                cores |= os.sched_getaffinity(int(tid))
    return sorted(cores)


def private_model_dir(root: Path) -> Path:
    """A model cache directory of links to the shared one's files, without the variant
    measurement cache: the replicas' one-thread choice is measured and kept there, not
    written over the shared cache's figures."""
    source = modelstore.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name != CACHE_FILE and path.is_file():
            (root / path.name).symlink_to(path.resolve())
    return root


def variant_report(metrics_port: int) -> dict[str, Any]:
    """The variant a service runs and how it was chosen (``facemask_model_variant_info``),
    with the model-only images/s it measured per variant."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, Any] = {"variant": None, "chosen_by": None, "measured_images_per_s": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "facemask_model_variant_info" and sample.value == 1:
                out["variant"] = f"{sample.labels['runtime']}-{sample.labels['precision']}"
                out["chosen_by"] = sample.labels["chosen_by"]
            elif sample.name == "facemask_model_variant_images_per_second":
                out["measured_images_per_s"][sample.labels["variant"]] = sample.value
    return out


@dataclass
class Round:
    """One configuration measured once."""

    replicas: int
    rate: float
    frames: int
    window_s: float
    skipped: int
    per_replica_rate: list[float]
    replica_cpu_percent: list[float]
    replica_cores: list[list[int]]
    redis_cpu_percent: float
    backlog: int
    backlog_left: int
    ended_early: bool
    variants: list[dict[str, Any]]
    ingest: RedisCost
    inference: RedisCost
    memory: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        out = asdict(self)
        out["ingest"] = self.ingest.to_json()
        out["inference"] = self.inference.to_json()
        return out


def fill_backlog(client: Any, frames: Sequence[bytes], count: int, cameras: int) -> None:
    """``count`` frame entries over ``cameras`` cameras, one ``XADD`` per round trip (an
    ingest node's call; ``MAXLEN ~`` above the backlog, so nothing is trimmed). Each camera
    shows consecutive video frames with capture times 1/5 s apart, ending now, as if it had
    filmed them at 5 fps (the alert service's tracking sees a plausible camera)."""
    base = time.time() - (count // cameras + 1) / CAMERA_FPS
    for i in range(count):
        c, n = i % cameras, i // cameras
        blob = frames[(n + 7 * c) % len(frames)]  # each camera plays the video in order
        width, height = jpeg_size(blob) or FRAME_SIZE
        entry = FrameEntry(f"scale-c{c}", n, base + n / CAMERA_FPS, "jpeg", width, height, blob)
        fields: Any = entry.to_fields()
        client.xadd(LAYOUT.frames_for(entry.camera_id), fields, maxlen=count, approximate=True)


def processed(service: Service) -> tuple[float, float]:
    """``(frames with an ok detections entry, frames skipped)`` so far."""
    metrics = service.scrape()
    return (
        metrics.get("facemask_frames_processed_total", 0.0),
        metrics.get("facemask_frames_skipped_total", 0.0),
    )


def run_round(
    replicas: int,
    cores: Sequence[int],
    frames: Sequence[bytes],
    args: argparse.Namespace,
    model_dir: Path,
    alerts: bool,
) -> tuple[Round, RedisCost | None]:
    """A fresh Redis with the backlog, ``replicas`` pinned services draining it; with
    ``alerts``, then the alert service reading every detections entry."""
    import redis

    env = {**SERVICE_ENV, "FACEMASK_MODEL_DIR": str(model_dir)}
    with tempfile.TemporaryDirectory() as tmp, RedisProcess(Path(tmp) / "redis") as server:
        assert server.proc is not None
        pid = server.proc.pid
        client: Any = redis.Redis.from_url(server.url)
        start = redis_sample(client, pid)
        fill_backlog(client, frames, args.backlog, args.cameras)
        filled = redis_sample(client, pid)
        memory = {"frames": stream_memory(client, LAYOUT.all_frames())}
        services: list[Service] = []
        try:
            for i in range(replicas):
                with pinned({cores[i % len(cores)]}):
                    services.append(Service(server.url, 1, **env))
            for service in services:
                service.wait_ready(timeout=args.ready_timeout)
            time.sleep(args.settle)
            low_water = 2 * MAX_INFLIGHT * replicas  # two in-flight windows of every replica
            cpu = [ProcStat(s.proc.pid) for s in services]
            redis_cpu = ProcStat(pid)
            before = [processed(s) for s in services]
            t0, s0 = time.monotonic(), redis_sample(client, pid)
            ended_early = False
            while time.monotonic() - t0 < args.window:
                time.sleep(0.5)
                lag, _ = group_backlog(client, LAYOUT.all_frames(), INFERENCE_GROUP)
                if lag < low_water:
                    ended_early = True
                    break
            after = [processed(s) for s in services]
            t1, s1 = time.monotonic(), redis_sample(client, pid)
            window = t1 - t0
            cpu_percent = [c.cpu_percent() for c in cpu]
            redis_percent = redis_cpu.cpu_percent()
            left, _ = group_backlog(client, LAYOUT.all_frames(), INFERENCE_GROUP)
            done = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
            skipped = int(sum(a[1] for a in after))
            pinned_cores = [process_cores(s.proc.pid) for s in services]
            variants = [variant_report(s.metrics_port) for s in services]
        finally:
            for service in services:
                service.stop()
        memory["detections"] = stream_memory(client, LAYOUT.all_detections())
        total = int(sum(done))
        result = Round(
            replicas=replicas,
            rate=total / window,
            frames=total,
            window_s=window,
            skipped=skipped,
            per_replica_rate=[d / window for d in done],
            replica_cpu_percent=cpu_percent,
            replica_cores=pinned_cores,
            redis_cpu_percent=redis_percent,
            backlog=args.backlog,
            backlog_left=left,
            ended_early=ended_early,
            variants=variants,
            ingest=redis_cost("ingest XADD", start, filled, args.backlog),
            inference=redis_cost("inference drain", s0, s1, total),
            memory=memory,
        )
        alerts_cost = alerts_phase(client, server.url, pid, Path(tmp), args) if alerts else None
        client.close()
    return result, alerts_cost


def alerts_phase(
    client: Any, redis_url: str, pid: int, tmp: Path, args: argparse.Namespace
) -> RedisCost:
    """The alert service reads every detections entry (from the start of the streams):
    Redis's cost per entry read, from before its start to the last acknowledgement."""
    entries = sum(int(client.xlen(k)) for k in LAYOUT.all_detections())
    before = redis_sample(client, pid)
    service = Alerts(redis_url, tmp / "alerts")
    try:
        service.wait_ready(timeout=args.ready_timeout)
        ready_at = time.monotonic()
        deadline = ready_at + args.alerts_timeout
        while time.monotonic() < deadline:
            lag, pending = group_backlog(client, LAYOUT.all_detections(), ALERTS_GROUP)
            if lag == 0 and pending == 0:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"the alert service did not read {entries} entries in time")
        after = redis_sample(client, pid)
    finally:
        service.stop()
    cost = redis_cost("alerts read", before, after, entries)
    cost.service_rate = entries / max(after.at - ready_at, 1e-6)
    return cost


# -- the plan -----------------------------------------------------------------------------


def capacity_plan(
    replica_fps: float,
    redis_us_per_frame: float,
    bytes_per_frame: float,
    *,
    replica_load: float,
    redis_budget: float,
    entry_bytes: float,
    retention_s: float,
    camera_fps: float = CAMERA_FPS,
    cameras: Sequence[int] = CAMERA_COUNTS,
) -> dict[str, Any]:
    """Cameras per replica core, frames and replicas per Redis master, and the cluster
    for each camera count.

    A replica (one core) is planned at ``replica_load`` of its measured drain rate (room
    for bursts and the latency goal); a Redis master at ``redis_budget`` of its one core
    (Redis runs commands on one thread; the rest is kept for catching up after an outage,
    persistence forks, replication and bursts). Memory: ``retention_s`` seconds of every
    camera's frames kept in the frame streams (``stream_maxlen`` set to match), at
    ``entry_bytes`` a frame entry. ``masters``: by CPU; ``cluster_masters``: a single
    Redis (primary and replica) when one master does, else a Redis Cluster of at least
    :data:`MIN_CLUSTER_MASTERS`.
    """
    cameras_per_replica = replica_fps * replica_load / camera_fps
    master_fps = redis_budget * 1e6 / redis_us_per_frame
    replicas_per_master = master_fps / (replica_fps * replica_load)
    rows = []
    for count in cameras:
        fps = count * camera_fps
        rows.append(
            {
                "cameras": count,
                "frames_per_s": fps,
                "replicas": math.ceil(count / cameras_per_replica),
                "redis_cores": fps * redis_us_per_frame / 1e6,
                "masters": (masters := max(1, math.ceil(fps / master_fps))),
                "cluster_masters": masters if masters == 1 else max(MIN_CLUSTER_MASTERS, masters),
                "redis_mbyte_per_s": fps * bytes_per_frame / 1e6,
                "frame_memory_gb": fps * retention_s * entry_bytes / 1e9,
            }
        )
    return {
        "camera_fps": camera_fps,
        "replica_load": replica_load,
        "redis_budget_cores": redis_budget,
        "replica_fps": replica_fps,
        "cameras_per_replica_core": cameras_per_replica,
        "redis_us_per_frame": redis_us_per_frame,
        "redis_bytes_per_frame": bytes_per_frame,
        "frame_entry_bytes": entry_bytes,
        "retention_s": retention_s,
        "frames_per_s_per_master": master_fps,
        "cameras_per_master": master_fps / camera_fps,
        "replicas_per_master": replicas_per_master,
        "clusters": rows,
    }


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds, not minutes")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per configuration")
    parser.add_argument("--backlog", type=int, default=None, help="frames in the backlog")
    parser.add_argument("--window", type=float, default=None, help="seconds measured")
    parser.add_argument("--settle", type=float, default=None, help="seconds after ready")
    parser.add_argument("--cameras", type=int, default=16, help="cameras of the backlog")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--alerts-timeout", type=float, default=180.0)
    parser.add_argument(
        "--replica-load", type=float, default=0.8, help="share of a replica's rate planned"
    )
    parser.add_argument(
        "--redis-budget", type=float, default=0.5, help="share of a master's core planned"
    )
    parser.add_argument(
        "--retention", type=float, default=10.0, help="seconds of frames kept per camera"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.backlog = args.backlog or (400 if args.quick else 12000)
    args.window = args.window or (2.0 if args.quick else 20.0)
    args.settle = args.settle if args.settle is not None else (0.5 if args.quick else 3.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rounds, print the tables, write the JSON."""
    args = parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    frames = make_frames(16 if args.quick else 64, FRAME_SIZE, quality=DEFAULT_QUALITY)
    mean_kb = sum(len(f) for f in frames) / len(frames) / 1e3
    method = METHOD.format(
        backlog=args.backlog,
        width=FRAME_SIZE[0],
        height=FRAME_SIZE[1],
        quality=DEFAULT_QUALITY,
        kb=mean_kb,
        window=args.window,
        settle=args.settle,
    )
    print(f"method: {method}", flush=True)
    if len(cores) < 2:
        print(f"warning: {len(cores)} usable core(s): the 2 replicas share it", flush=True)
    rounds: list[Round] = []
    alerts: RedisCost | None = None
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = private_model_dir(Path(tmp) / "models")
        for r in range(args.rounds):
            for replicas in (1, 2):
                last = r == args.rounds - 1 and replicas == 2
                result, cost = run_round(replicas, cores, frames, args, model_dir, alerts=last)
                alerts = cost or alerts
                rounds.append(result)
                print(
                    f"round {r + 1}: {replicas} replica(s) {result.rate:.1f} frames/s "
                    f"({result.frames} frames in {result.window_s:.1f} s)",
                    flush=True,
                )
    assert alerts is not None
    best = {n: max((x for x in rounds if x.replicas == n), key=lambda x: x.rate) for n in (1, 2)}
    ratio = best[2].rate / best[1].rate if best[1].rate else math.nan
    print_table(
        [
            "replicas",
            "frames/s",
            "per replica",
            "replica CPU %",
            "cores",
            "redis CPU %",
            "skipped",
            "window s",
        ],
        [
            [
                x.replicas,
                x.rate,
                " / ".join(f"{v:.1f}" for v in x.per_replica_rate),
                " / ".join(f"{v:.0f}" for v in x.replica_cpu_percent),
                " ".join(",".join(map(str, c)) for c in x.replica_cores),
                x.redis_cpu_percent,
                x.skipped,
                x.window_s,
            ]
            for x in rounds
        ],
    )
    variant = rounds[0].variants[0]
    print(
        f"variant: {variant['variant']} ({variant['chosen_by']}; one thread: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(variant["measured_images_per_s"].items()))
        + " images/s)"
    )
    print(
        f"throughput: 1 replica {best[1].rate:.1f} frames/s, 2 replicas {best[2].rate:.1f} "
        f"frames/s, ratio {ratio:.2f} (goal >= {RATIO_GOAL})"
    )
    ingest = sum_costs("ingest XADD", [x.ingest for x in rounds])
    inference = sum_costs("inference drain", [x.inference for x in rounds])
    phases = [ingest, inference, alerts]
    print_table(
        ["redis phase", "units", "CPU us/unit", "in B/unit", "out B/unit", "top commands us/unit"],
        [
            [
                p.phase,
                p.units,
                p.cpu_us_per_unit,
                p.in_bytes_per_unit,
                p.out_bytes_per_unit,
                ", ".join(
                    f"{name} {c['us_per_unit']:.1f}"
                    for name, c in sorted(p.commands.items(), key=lambda kv: -kv[1]["us_per_unit"])[
                        :4
                    ]
                ),
            ]
            for p in phases
        ],
    )
    per_frame_us = sum(p.cpu_us_per_unit for p in phases)
    per_frame_bytes = sum(p.in_bytes_per_unit + p.out_bytes_per_unit for p in phases)
    memory = rounds[-1].memory
    snapshots = alerts.commands.get("xrange", {}).get("calls_per_unit", 0.0)
    print(
        f"alert service: {alerts.service_rate or 0:.0f} entries/s read (one process, "
        f"unpinned), {snapshots:.3f} snapshot frame reads per entry"
    )
    print(
        f"redis per frame (ingest + inference + alerts): {per_frame_us:.1f} us CPU, "
        f"{per_frame_bytes / 1e3:.1f} KB in+out; memory per frame entry "
        f"{memory['frames']['bytes_per_entry'] / 1e3:.1f} KB, per detections entry "
        f"{memory['detections']['bytes_per_entry']:.0f} B"
    )
    plan = capacity_plan(
        best[1].rate,
        per_frame_us,
        per_frame_bytes,
        replica_load=args.replica_load,
        redis_budget=args.redis_budget,
        entry_bytes=memory["frames"]["bytes_per_entry"],
        retention_s=args.retention,
    )
    print(
        f"plan: {plan['cameras_per_replica_core']:.1f} cameras per replica core "
        f"({best[1].rate:.1f} x {args.replica_load} / {CAMERA_FPS:g} fps); a master at "
        f"{args.redis_budget} core takes {plan['frames_per_s_per_master']:.0f} frames/s = "
        f"{plan['cameras_per_master']:.0f} cameras = {plan['replicas_per_master']:.1f} replicas"
    )
    print_table(
        [
            "cameras",
            "frames/s",
            "replica cores",
            "redis cores",
            "masters (CPU)",
            "cluster masters",
            "redis MB/s",
            f"frames GB ({args.retention:g} s)",
        ],
        [
            [
                row["cameras"],
                row["frames_per_s"],
                row["replicas"],
                row["redis_cores"],
                row["masters"],
                row["cluster_masters"],
                row["redis_mbyte_per_s"],
                row["frame_memory_gb"],
            ]
            for row in plan["clusters"]
        ],
    )
    summary = {
        "method": method,
        "variant": variant,
        "one_replica_fps": best[1].rate,
        "two_replicas_fps": best[2].rate,
        "ratio": ratio,
        "ratio_goal": RATIO_GOAL,
        "frame_bytes_mean": mean_kb * 1e3,
        "redis_cpu_us_per_frame": per_frame_us,
        "redis_bytes_per_frame": per_frame_bytes,
        "redis": {p.phase: p.to_json() for p in phases},
        "memory": memory,
        "plan": plan,
    }
    payload = {
        "machine": machine_info(1),
        "usable_cores": cores,
        "quick": args.quick,
        "args": {k: v for k, v in vars(args).items() if k != "output"},
        "frame_size": list(FRAME_SIZE),
        "summary": summary,
        "rounds": [x.to_json() for x in rounds],
    }
    path = write_results("scale", payload, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
