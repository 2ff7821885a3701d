"""``make bench-chaos``: random faults against the local pipeline at 80 % load.

Not a test: it runs for minutes (``--minutes``, default 5; ``--quick`` is the CI smoke
run, about a minute) and reports what a building's operator would want to know after a
bad day:

* **Frames** offered (added to Redis), processed (a detections entry with status ``ok``),
  skipped (a detections entry with status ``skipped``: too old after a stall),
  dead-lettered (a dead-letter record names the frame), destroyed by a fault (added before
  Redis lost its data and never resolved), refused (Redis refused the add: the edge node's
  problem, counted apart) and **lost**: offered, not destroyed by a fault, and never
  resolved. Goal: lost 0.
* **Stalls**: a stall is a gap of more than ``--stall-gap`` seconds between frames
  resolved while frames were waiting. For each: its length and how long until a probe saw
  it (a service not ready, ``facemask_*_stalled`` set, or not answering at all, as an
  orchestrator's probe would). Goal: every stall longer than 10 s detected within 10 s.
* **Memory**: the peak RSS of every service against its deploy limit
  (``deploy/k8s``). Goal: every peak under its limit.

The pipeline: a real redis-server (AOF, ``appendfsync always``), the inference service and
the alert service as child processes, and simulated cameras publishing in ingest's wire
format at 80 % of the capacity measured first. The benchmark is also the orchestrator: a
service that exits (killed, or a supervisor's verdict) is started again, and counted.

Faults (``--faults``, all by default), one at a time in a seeded random order, each followed
by a recovery window:

* ``poison``: malformed entries of every kind in the frame and detections streams;
* ``redis_restart``: Redis stopped and started again with its data (AOF);
* ``redis_wipe``: Redis stopped and started again empty (no persistence): the frames and
  consumer groups in it are destroyed;
* ``redis_oom``: ``maxmemory`` set below the memory in use, so writes fail with OOM, then
  restored;
* ``stop_inference`` / ``stop_alerts``: the service is frozen (SIGSTOP), then resumed;
* ``kill_inference``: the service is SIGKILLed (and started again by this orchestrator).

Writes ``bench/results/chaos.json`` and prints two tables. Exit status 1 when a goal is
missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.bench_inference import Service, make_frames
from bench.bench_pipeline import LAYOUT, Alerts, ProcStat
from bench.common import (
    MIB_BYTES,
    RESULTS_DIR,
    ServiceChild,
    deploy_limits,
    machine_info,
    print_table,
    scrape,
    write_results,
)
from facemask.contracts.wire import FrameEntry, as_text
from facemask.dev.localredis import RedisProcess

FRAME_SIZE = (640, 480)
CAMERAS = 8
FAULTS = (
    "poison",
    "redis_restart",
    "redis_wipe",
    "redis_oom",
    "stop_inference",
    "stop_alerts",
    "kill_inference",
)
GOAL_DETECT_S = 10.0
PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0


def now() -> float:
    return time.time()


# -- bookkeeping -------------------------------------------------------------------------


@dataclass
class FaultRun:
    """One fault as it happened."""

    name: str
    started: float
    ended: float = 0.0
    destructive: bool = False
    """Redis lost its data: frames added before ``wiped`` and never resolved were destroyed."""
    wiped: float = 0.0
    """When the server that held the data was gone (after its stop returned)."""
    poison: int = 0


@dataclass
class Stall:
    """A gap in resolved frames while frames were waiting."""

    started: float
    ended: float
    detected_after_s: float | None = None
    detected_by: str = ""
    fault: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Ledger:
    """Every frame offered and what became of it."""

    offered: dict[tuple[str, str], float] = field(default_factory=dict)
    """(stream, sid) -> when it was added."""
    poison: set[tuple[str, str]] = field(default_factory=set)
    resolved: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    """(stream, sid) -> (outcome, Redis time of the outcome)."""
    refused: int = 0
    detections_poison: dict[tuple[str, str], float] = field(default_factory=dict)
    detections_poison_resolved: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sid_time(sid: str) -> float:
    return int(sid.split("-", 1)[0]) / 1000.0


# -- the pipeline ------------------------------------------------------------------------


class Pipeline:
    """Redis, inference and alerts; the orchestrator's restart loop; probes and RSS."""

    def __init__(self, work: Path, threads: int) -> None:
        self.work = work
        self.redis = RedisProcess(
            work / "redis", appendonly=True, extra_args=["--appendfsync", "always"]
        )
        self.threads = threads
        self.inference: Service | None = None
        self.alerts: Alerts | None = None
        self.restarts: dict[str, int] = {"inference": 0, "alerts": 0}
        self.exit_codes: dict[str, list[int]] = {"inference": [], "alerts": []}
        self.frozen: set[str] = set()
        self.stats: dict[str, list[ProcStat]] = {"inference": [], "alerts": [], "redis": []}
        self.not_ready: list[tuple[float, str]] = []
        """(time, service) of every probe that found a service not ready or silent."""
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.redis.start()
        self._track("redis", self.redis.proc)
        self.inference = Service(
            self.redis.url,
            self.threads,
            FACEMASK_INFERENCE_MAX_BATCH_SIZE="16",
            FACEMASK_INFERENCE_READ_BLOCK="0.05",
            FACEMASK_INFERENCE_CLAIM_IDLE="5",
            FACEMASK_INFERENCE_CLAIM_INTERVAL="2",
            FACEMASK_INFERENCE_WARMUP="false",
        )
        self.alerts = Alerts(self.redis.url, self.work / "alerts")
        self.inference.wait_ready()
        self.alerts.wait_ready()
        self._track("inference", self.inference.proc)
        self._track("alerts", self.alerts.proc)
        for target in (self._orchestrate, self._probe):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _track(self, name: str, proc: Any) -> None:
        if proc is not None:
            self.stats[name].append(ProcStat(proc.pid))

    def services(self) -> dict[str, ServiceChild]:
        assert self.inference is not None and self.alerts is not None
        return {"inference": self.inference, "alerts": self.alerts}

    def _orchestrate(self) -> None:
        """Start a service again when it exited (what Kubernetes would do)."""
        while not self._done.wait(0.5):
            for name, service in self.services().items():
                if service.child.stopped or service.proc.poll() is None:
                    continue
                self.exit_codes[name].append(int(service.proc.returncode))
                self.restarts[name] += 1
                with contextlib.suppress(Exception):
                    service.child.start()
                    self._track(name, service.proc)

    def _probe(self) -> None:
        """Readiness of every service every half second; RSS samples."""
        while not self._done.wait(PROBE_INTERVAL):
            for stats in self.stats.values():
                if stats:
                    stats[-1].sample()
            t = now()
            for name, service in self.services().items():
                if not self.ready(name, service):
                    self.not_ready.append((t, name))

    def ready(self, name: str, service: ServiceChild) -> bool:
        try:
            if name == "alerts":
                url = f"http://127.0.0.1:{service.metrics_port}/readyz"
                with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as reply:
                    return bool(reply.status == 200)
            metrics = scrape(service.metrics_port, timeout=PROBE_TIMEOUT)
        except (OSError, urllib.error.URLError):
            return False
        stalled = any(v for k, v in metrics.items() if k.endswith("_stalled"))
        return metrics.get("facemask_inference_ready") == 1.0 and not stalled

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(5)
        for service in (self.alerts, self.inference):
            if service is not None:
                with contextlib.suppress(Exception):
                    if service.proc.poll() is None:
                        os.kill(service.proc.pid, signal.SIGCONT)
                    service.stop(30)
        self.redis.stop()

    def peak_rss(self) -> dict[str, float]:
        return {
            name: max((s.peak_rss_mib for s in stats), default=0.0)
            for name, stats in self.stats.items()
        }


# -- load and collection ------------------------------------------------------------------


def client_for(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)


def publish(
    url: str, frames: list[bytes], fps: float, ledger: Ledger, stop: threading.Event
) -> None:
    """CAMERAS cameras at ``fps`` each; a frame Redis refuses is counted and dropped."""
    client = client_for(url)
    ids = [f"chaos-c{c}" for c in range(CAMERAS)]
    period = 1.0 / (fps * CAMERAS)
    n = 0
    t0 = time.monotonic()
    while not stop.is_set():
        delay = t0 + n * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        cam = ids[n % CAMERAS]
        entry = FrameEntry(cam, n, now(), "jpeg", *FRAME_SIZE, frames[n % len(frames)])
        key = LAYOUT.frames_for(cam)
        n += 1
        try:
            fields: Any = entry.to_fields()
            sid = as_text(client.xadd(key, fields, maxlen=5000, approximate=True))
        except redis.RedisError:
            with ledger.lock:
                ledger.refused += 1
            continue
        with ledger.lock:
            ledger.offered[(key, sid)] = now()


def collect(url: str, ledger: Ledger, stop: threading.Event) -> None:
    """Follow the detections and dead-letter streams (plain XREAD: no group to lose)."""
    frames_of = {LAYOUT.detections(p): LAYOUT.frames(p) for p in range(LAYOUT.partitions)}
    keys = [*frames_of, *(LAYOUT.deadletter(p) for p in range(LAYOUT.partitions))]
    keys.append(LAYOUT.alerts_deadletter)
    cursors = dict.fromkeys(keys, "0-0")
    client = client_for(url)
    while not stop.is_set():
        try:
            reply = client.xread(cursors, count=500, block=200) or []
        except redis.RedisError:
            time.sleep(0.2)
            continue
        with ledger.lock:
            for key, entries in reply:
                name = as_text(key)
                for sid, raw in entries:
                    cursors[name] = as_text(sid)
                    fields = {as_text(k): v for k, v in raw.items()}
                    at = sid_time(as_text(sid))
                    if name in frames_of:  # a detections entry answers its frame
                        frame_sid = as_text(fields.get("frame_sid", b""))
                        status = as_text(fields.get("status", b"ok"))
                        ledger.resolved[(frames_of[name], frame_sid)] = (status, at)
                        continue
                    origin = (as_text(fields.get("stream", b"")), as_text(fields.get("sid", b"")))
                    if name == LAYOUT.alerts_deadletter:
                        ledger.detections_poison_resolved.add(origin)
                    else:
                        ledger.resolved[origin] = ("deadletter", at)


# -- faults --------------------------------------------------------------------------------


POISON_FRAMES: list[dict[str, Any]] = [
    {"garbage": b"\x00\xff"},
    {
        "camera": "chaos-p",
        "frame": "1",
        "ts": "nan",
        "fmt": "jpeg",
        "w": "640",
        "h": "480",
        "data": b"x",
    },
    {
        "camera": "chaos-p",
        "frame": "2",
        "ts": "1e12",
        "fmt": "jpeg",
        "w": "640",
        "h": "480",
        "data": b"x",
    },
    {"camera": "chaos-p", "frame": "3", "ts": "", "fmt": "jpeg"},
    {
        "camera": b"\xff\xfe\n\x00",
        "frame": "4",
        "ts": "1",
        "fmt": "jpeg",
        "w": "1",
        "h": "1",
        "data": b"",
    },
]


def poison_entries(jpeg: bytes, at: float) -> list[dict[str, Any]]:
    """Malformed frame entries of every kind, plus undecodable and lying images."""
    base = FrameEntry("chaos-p", 9, at, "jpeg", *FRAME_SIZE, jpeg).to_fields()
    entries: list[dict[str, Any]] = [dict(p) for p in POISON_FRAMES]
    entries.append({**base, "data": jpeg[: len(jpeg) // 3]})  # truncated JPEG
    entries.append({**base, "w": "64", "h": "48"})  # declared size lies
    entries.append({**base, "w": "100000", "h": "100000"})  # huge declared size
    entries.append({**base, "ts": repr(at + 10 * 365 * 86400)})  # ten years ahead
    return entries


POISON_DETECTIONS: list[dict[str, Any]] = [
    {"garbage": b"\x00"},
    {"camera": "chaos-p", "frame": "1", "frame_sid": "x", "ts": "1e300", "status": "ok"},
    {
        "camera": "chaos-p",
        "frame": "1",
        "frame_sid": "1-1",
        "ts": "1e15",
        "done": "1e15",
        "w": "640",
        "h": "480",
        "status": "ok",
        "dets": "[[0,0,1,1,0.9,1]]",
    },
    {
        "camera": "chaos-p",
        "frame": "1",
        "frame_sid": "1-1",
        "ts": "nan",
        "done": "0",
        "w": "-1",
        "h": "0",
        "status": "weird",
        "dets": "{",
    },
]


class Chaos:
    """Runs the faults one at a time against a :class:`Pipeline`."""

    def __init__(self, pipeline: Pipeline, ledger: Ledger, jpeg: bytes, rng: random.Random) -> None:
        self.pipeline = pipeline
        self.ledger = ledger
        self.jpeg = jpeg
        self.rng = rng
        self.runs: list[FaultRun] = []

    def run(self, name: str, seconds: float) -> FaultRun:
        fault = FaultRun(name, now())
        self.runs.append(fault)
        getattr(self, name)(fault, seconds)
        fault.ended = now()
        return fault

    def _client(self) -> Any:
        return client_for(self.pipeline.redis.url)

    def poison(self, fault: FaultRun, seconds: float) -> None:
        client = self._client()
        for p in range(LAYOUT.partitions):
            for fields in poison_entries(self.jpeg, now()):
                sid = as_text(client.xadd(LAYOUT.frames(p), fields))
                with self.ledger.lock:
                    self.ledger.offered[(LAYOUT.frames(p), sid)] = now()
                    self.ledger.poison.add((LAYOUT.frames(p), sid))
                fault.poison += 1
            for fields in POISON_DETECTIONS:
                sid = as_text(client.xadd(LAYOUT.detections(p), fields))
                with self.ledger.lock:
                    self.ledger.detections_poison[(LAYOUT.detections(p), sid)] = now()
                fault.poison += 1
        time.sleep(seconds)

    def redis_restart(self, fault: FaultRun, seconds: float) -> None:
        self.pipeline.redis.stop()
        time.sleep(seconds)
        self.pipeline.redis.start()
        self.pipeline._track("redis", self.pipeline.redis.proc)

    def redis_wipe(self, fault: FaultRun, seconds: float) -> None:
        fault.destructive = True
        self.pipeline.redis.stop()
        fault.wiped = now()
        directory = self.pipeline.redis.workdir
        for path in directory.iterdir():
            if path.name != "redis.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        time.sleep(seconds)
        self.pipeline.redis.start()
        self.pipeline._track("redis", self.pipeline.redis.proc)

    def redis_oom(self, fault: FaultRun, seconds: float) -> None:
        client = self._client()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", max(1, used // 2))
        client.config_set("maxmemory-policy", "noeviction")
        time.sleep(seconds)
        client.config_set("maxmemory", 0)

    def _freeze(self, name: str, seconds: float) -> None:
        proc = self.pipeline.services()[name].proc
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    def stop_inference(self, fault: FaultRun, seconds: float) -> None:
        self._freeze("inference", seconds)

    def stop_alerts(self, fault: FaultRun, seconds: float) -> None:
        self._freeze("alerts", seconds)

    def kill_inference(self, fault: FaultRun, seconds: float) -> None:
        proc = self.pipeline.services()["inference"].proc
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(seconds)


# -- analysis ------------------------------------------------------------------------------


def find_stalls(ledger: Ledger, gap: float, start: float, end: float) -> list[Stall]:
    """Gaps longer than ``gap`` between resolutions while offered frames were waiting."""
    with ledger.lock:
        offered = sorted(ledger.offered.values())
        resolved = sorted(at for _, at in ledger.resolved.values())
    if not offered:
        return []
    stalls = []
    previous = max(start, offered[0])
    for at in [*(t for t in resolved if start <= t <= end), end]:
        if at - previous > gap:
            waiting = any(previous <= t < at for t in offered)
            if waiting:
                stalls.append(Stall(previous, at))
        previous = max(previous, at)
    return stalls


def overlaps(stall: Stall, fault: FaultRun) -> bool:
    """Whether ``stall`` happened during ``fault`` or its first seconds of recovery."""
    return fault.started - 1 <= stall.ended and stall.started <= fault.ended + 5


def attach_detection(
    stalls: list[Stall], probes: Sequence[tuple[float, str]], faults: Sequence[FaultRun]
) -> None:
    for stall in stalls:
        seen = [(t, who) for t, who in probes if stall.started <= t <= stall.ended + PROBE_INTERVAL]
        if seen:
            t, who = min(seen)
            stall.detected_after_s = max(0.0, t - stall.started)
            stall.detected_by = who
        during = [f.name for f in faults if overlaps(stall, f)]
        stall.fault = ",".join(during) or "-"


@dataclass
class Totals:
    offered: int
    processed: int
    skipped: int
    deadlettered: int
    destroyed: int
    refused: int
    lost: int
    poison_frames: int
    poison_frames_deadlettered: int
    poison_detections: int
    poison_detections_deadlettered: int
    lost_examples: list[tuple[str, str, float]] = field(default_factory=list)
    """(stream, entry id, when added) of up to 20 lost frames, for the post-mortem."""


def totals(ledger: Ledger, faults: Sequence[FaultRun]) -> Totals:
    wipes = [f.wiped for f in faults if f.destructive]
    counts = {"ok": 0, "skipped": 0, "deadletter": 0}
    destroyed = lost = 0
    examples: list[tuple[str, str, float]] = []
    with ledger.lock:
        for key, added in ledger.offered.items():
            outcome = ledger.resolved.get(key)
            if outcome is not None:
                status = outcome[0] if outcome[0] in counts else "deadletter"
                counts[status] += 1
            elif any(added <= w for w in wipes):
                destroyed += 1
            else:
                lost += 1
                if len(examples) < 20:
                    examples.append((*key, added))
        poison_ok = sum(
            1 for k in ledger.poison if ledger.resolved.get(k, ("",))[0] == "deadletter"
        )
        det_poison = len(ledger.detections_poison)
        det_ok = len(set(ledger.detections_poison) & ledger.detections_poison_resolved)
        det_destroyed = sum(
            1
            for k, added in ledger.detections_poison.items()
            if k not in ledger.detections_poison_resolved and any(added <= w for w in wipes)
        )
        return Totals(
            offered=len(ledger.offered),
            processed=counts["ok"],
            skipped=counts["skipped"],
            deadlettered=counts["deadletter"],
            destroyed=destroyed,
            refused=ledger.refused,
            lost=lost + (det_poison - det_ok - det_destroyed),
            poison_frames=len(ledger.poison),
            poison_frames_deadlettered=poison_ok,
            poison_detections=det_poison,
            poison_detections_deadlettered=det_ok,
            lost_examples=examples,
        )


# -- capacity ------------------------------------------------------------------------------


def measure_capacity(url: str, frames: list[bytes], count: int) -> float:
    """Frames/s the pipeline resolves when ``count`` frames arrive at once."""
    ledger = Ledger()
    stop = threading.Event()
    collector = threading.Thread(target=collect, args=(url, ledger, stop), daemon=True)
    collector.start()
    client = client_for(url)
    pipe = client.pipeline(transaction=False)
    t0 = now()
    for n in range(count):
        cam = f"chaos-cal{n % CAMERAS}"
        fields: Any = FrameEntry(
            cam, n, t0, "jpeg", *FRAME_SIZE, frames[n % len(frames)]
        ).to_fields()
        pipe.xadd(LAYOUT.frames_for(cam), fields)
    sids = pipe.execute()
    keys = [(LAYOUT.frames_for(f"chaos-cal{n % CAMERAS}"), as_text(s)) for n, s in enumerate(sids)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with ledger.lock:
            done = [ledger.resolved[k] for k in keys if k in ledger.resolved]
        if len(done) == len(keys):
            break
        time.sleep(0.2)
    stop.set()
    collector.join(5)
    ok = [at for status, at in done if status == "ok"]
    if len(ok) < 2:
        raise RuntimeError("the pipeline processed no calibration frames")
    return len(ok) / max(1e-3, max(ok) - t0)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (about a minute)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the fault phase")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated fault names")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of measured capacity")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stall-gap", type=float, default=2.0)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def schedule(
    names: Sequence[str], minutes: float, rng: random.Random, quick: bool
) -> list[tuple[str, float, float]]:
    """(fault, seconds, recovery seconds) until ``minutes`` are filled; every fault once
    before any repeats."""
    plan: list[tuple[str, float, float]] = []
    budget = minutes * 60
    while budget > 0:
        order = list(names)
        rng.shuffle(order)
        for name in order:
            seconds = rng.uniform(2, 4) if quick else rng.uniform(3, 15)
            recovery = 8.0 if quick else rng.uniform(15, 25)
            plan.append((name, seconds, recovery))
            budget -= seconds + recovery
            if budget <= 0:
                break
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        print(f"unknown faults {unknown}; known: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    minutes = min(args.minutes, 0.5) if args.quick else args.minutes
    rng = random.Random(args.seed)
    out_dir: Path = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = make_frames(8, FRAME_SIZE)
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    pipeline = Pipeline(work, args.threads)
    ledger = Ledger()
    offering, collecting = threading.Event(), threading.Event()
    publisher = collector = None
    chaos = Chaos(pipeline, ledger, frames[0], rng)
    plan = schedule(names, minutes, rng, args.quick)
    try:
        pipeline.start()
        capacity = measure_capacity(pipeline.redis.url, frames, 60 if args.quick else 400)
        fps = args.load * capacity / CAMERAS
        print(f"capacity {capacity:.1f} frames/s; offering {fps * CAMERAS:.1f}/s", flush=True)
        url = pipeline.redis.url
        publisher = threading.Thread(target=publish, args=(url, frames, fps, ledger, offering))
        collector = threading.Thread(target=collect, args=(url, ledger, collecting))
        publisher.start()
        collector.start()
        time.sleep(5.0)
        start = now()
        for name, seconds, recovery in plan:
            print(f"{time.strftime('%H:%M:%S')} fault {name} for {seconds:.1f} s", flush=True)
            chaos.run(name, seconds)
            time.sleep(recovery)
        offering.set()
        publisher.join()
        stop_offer = now()
        drain_until = time.monotonic() + 60
        wipes = [f.wiped for f in chaos.runs if f.destructive]
        while time.monotonic() < drain_until:
            with ledger.lock:  # frames a wipe destroyed will never be answered
                waiting = sum(
                    1
                    for k, added in ledger.offered.items()
                    if k not in ledger.resolved and not any(added <= w for w in wipes)
                )
            if not waiting:
                break
            time.sleep(0.5)
        end = now()
    finally:
        offering.set()
        collecting.set()
        for thread in (publisher, collector):
            if thread is not None:
                thread.join(5)
        pipeline.stop()
        shutil.rmtree(work, ignore_errors=True)
    stalls = find_stalls(ledger, args.stall_gap, start, stop_offer)
    attach_detection(stalls, pipeline.not_ready, chaos.runs)
    sums = totals(ledger, chaos.runs)
    limits = {
        name: found["limit"] / MIB_BYTES
        for name, found in deploy_limits(("inference", "alerts", "redis")).items()
        if found["limit"]
    }
    peaks = pipeline.peak_rss()
    undetected = [
        s
        for s in stalls
        if s.seconds > GOAL_DETECT_S
        and (s.detected_after_s is None or s.detected_after_s > GOAL_DETECT_S)
    ]
    over = {n: p for n, p in peaks.items() if limits.get(n) and p > limits[n]}
    rows = []
    for run in chaos.runs:
        mine = [s for s in stalls if overlaps(s, run)]
        detected = [s.detected_after_s for s in mine if s.detected_after_s is not None]
        rows.append(
            [
                run.name,
                run.ended - run.started,
                run.poison,
                len(mine),
                max((s.seconds for s in mine), default=0.0),
                max(detected) if detected else None,
                sum(1 for s in mine if s.detected_after_s is None),
            ]
        )
    headers = ["fault", "seconds", "poison entries", "stalls", "longest stall s"]
    print_table([*headers, "detected after s", "undetected"], rows)
    print_table(
        [
            "offered",
            "processed",
            "skipped",
            "dead-lettered",
            "destroyed by fault",
            "refused",
            "lost",
        ],
        [
            [
                sums.offered,
                sums.processed,
                sums.skipped,
                sums.deadlettered,
                sums.destroyed,
                sums.refused,
                sums.lost,
            ]
        ],
    )
    print_table(
        ["service", "peak RSS MiB", "deploy limit MiB", "restarts", "exit codes"],
        [
            [
                n,
                peaks[n],
                limits.get(n),
                pipeline.restarts.get(n, 0),
                pipeline.exit_codes.get(n, []),
            ]
            for n in peaks
        ],
    )
    longest = max((s.seconds for s in stalls), default=0.0)
    goals = {
        "lost_zero": sums.lost == 0,
        "stalls_detected_within_10s": not undetected,
        "rss_under_limits": not over,
    }
    print(
        f"lost {sums.lost}; longest stall {longest:.1f} s; "
        f"undetected stalls > {GOAL_DETECT_S:.0f} s: {len(undetected)}; goals "
        + ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in goals.items())
    )
    payload = {
        "machine": machine_info(args.threads),
        "quick": args.quick,
        "seed": args.seed,
        "capacity_fps": capacity,
        "offered_fps": fps * CAMERAS,
        "faults": [asdict(f) for f in chaos.runs],
        "stalls": [asdict(s) | {"seconds": s.seconds} for s in stalls],
        "totals": asdict(sums),
        "longest_stall_s": longest,
        "peak_rss_mib": peaks,
        "limits_mib": limits,
        "restarts": pipeline.restarts,
        "exit_codes": pipeline.exit_codes,
        "goals": goals,
        "drained_in_s": end - stop_offer,
    }
    path = write_results("chaos", payload, out_dir / "chaos.json")
    print(f"wrote {path}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
