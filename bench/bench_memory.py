"""``make bench-memory``: peak memory of each service under its worst inputs, against its
deploy memory limit (issue 13).

Redis, the inference service and the alert service run as real child processes; a
sampler reads every process's resident set (``/proc/PID/status``, ``VmRSS``) every 20 ms
throughout. Phases, each ``--seconds`` long:

1. **idle**: the services ready, nothing sent (the baseline: imports, model).
2. **grpc-max-tiles**: ``--clients`` concurrent gRPC clients, each sending requests of
   ``--images`` 1280x720 JPEGs with the largest tile grid the service accepts
   (``max_tiles``) and the largest batch; what does not fit the queue is refused
   (RESOURCE_EXHAUSTED) before anything is decoded.
3. **grpc-bombs**: requests of decompression bombs (a 64x48 JPEG whose header says
   16000x16000), honest large images (``--big-side`` square JPEGs, decoded for real)
   and malformed protobuf.
4. **stream-bombs**: frame entries declared 640x480 whose JPEG header says 16000x16000 or
   that really are ``--big-side`` square, and honest huge frames captured long ago (skipped
   as too old: they become the cameras' latest frames, the issue's path).
5. **dashboard**: detections entries pointing at those frames, then ``--clients``
   concurrent browsers fetching every camera's ``latest.jpg`` again and again.

The limits come from the deploy manifests: ``resources.limits.memory`` of each service's
Deployment in ``deploy/k8s/base`` and ``deploy.resources.limits.memory`` in
``docker-compose.yml``; the lower of the two is the one that kills. Prints one row per
service (limit, idle and peak RSS, headroom, pass/fail) and the request outcomes, and
writes ``bench/results/memory.json``. Exit status 1 when a service went over its limit.
``--quick`` is the CI smoke run (small images, one second per phase).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import shutil
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from bench.bench_inference import Service
from bench.bench_pipeline import Alerts
from bench.common import deploy_limits, machine_info, print_table, write_results
from facemask.contracts.streams import StreamLayout
from facemask.contracts.wire import DetectionsEntry, FrameEntry
from facemask.dev.localredis import RedisProcess
from facemask.dev.waiting import wait_until

if TYPE_CHECKING:
    from services.inference.config import InferenceSettings

LAYOUT = StreamLayout("facemask", 4)
SERVICES = ("inference", "alerts")
FRAME_SIZE = (1280, 720)
MIB = 1024 * 1024
# -- RSS sampling ------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident set of ``pid`` now (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the RSS of named processes in a thread; peaks per phase."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> None:
        """One reading of every process, folded into the current phase's peaks."""
        peaks = self.peaks.setdefault(self.phase, {})
        for name, pid in self.pids.items():
            peaks[name] = max(peaks.get(name, 0), rss_bytes(pid))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def peak(self, name: str) -> int:
        """Peak RSS of ``name`` over every phase but ``idle``'s baseline included."""
        return max((p.get(name, 0) for p in self.peaks.values()), default=0)


# -- inputs ------------------------------------------------------------------------------


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG with some texture (noise blocks scaled up: realistic size, quick to make)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


def lying_jpeg(width: int, height: int) -> bytes:
    """A real 64x48 JPEG whose frame header (SOF) claims ``width`` x ``height``."""
    data = bytearray(jpeg(64, 48))
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC2):
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    struct.pack_into(">HH", data, pos + 5, height, width)
    return bytes(data)


# -- workloads ---------------------------------------------------------------------------


def grpc_load(
    port: int, requests: Callable[[int], list[Any]], clients: int, seconds: float
) -> Counter[str]:
    """``clients`` threads sending the requests ``requests(client)`` round robin for
    ``seconds``; returns the outcomes (``OK`` or the gRPC status name)."""
    import grpc

    from facemask.v1 import detector_pb2

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        options = [
            ("grpc.max_send_message_length", 64 * MIB),
            ("grpc.max_receive_message_length", 64 * MIB),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            detect = channel.unary_unary(
                "/facemask.v1.Detector/Detect",
                request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
                response_deserializer=detector_pb2.DetectResponse.FromString,
            )
            batch = requests(index)
            n = 0
            while time.monotonic() < deadline:
                try:
                    detect(batch[n % len(batch)], timeout=60)
                    outcome = "OK"
                except grpc.RpcError as exc:
                    outcome = exc.code().name
                n += 1
                with lock:
                    outcomes[outcome] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return outcomes


def dashboard_load(port: int, cameras: Sequence[str], clients: int, seconds: float) -> Counter[str]:
    """``clients`` browsers fetching every camera's ``latest.jpg`` for ``seconds``."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def browser(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = index
        while time.monotonic() < deadline:
            camera = cameras[n % len(cameras)]
            n += 1
            try:
                conn.request("GET", f"/api/cameras/{camera}/latest.jpg")
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                outcome = "error"
            with lock:
                outcomes[outcome] += 1
        conn.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(browser, range(clients)))
    return outcomes


_FRAME_IDS = itertools.count(1)
Frame = tuple[str, bytes, int, int, float]
"""``(camera, image bytes, declared width, declared height, capture time)``."""


def publish_frames(client: Any, frames: Sequence[Frame], maxlen: int = 64) -> int:
    """XADD each frame as a frame entry (streams trimmed to ``maxlen``) and a detections
    entry (status skipped/too_old, as inference writes for a stale frame) that makes it
    its camera's latest frame; returns the detections entries written."""
    for camera, data, width, height, ts in frames:
        n = next(_FRAME_IDS)  # increasing: the alert service drops repeated frame ids
        entry = FrameEntry(camera, n, ts, "jpeg", width, height, data, node="bench")
        partition = LAYOUT.partition_of(camera)
        sid = client.xadd(
            LAYOUT.frames(partition), entry.to_fields(), maxlen=maxlen, approximate=True
        ).decode()
        dets = DetectionsEntry(
            camera, n, sid, ts, time.time(), width, height, "bench",
            status="skipped", reason="too_old",
        )  # fmt: skip
        client.xadd(LAYOUT.detections(partition), dets.to_fields(), maxlen=maxlen)
    return len(frames)


def labelled(port: int, sample: str, label: str) -> dict[str, float]:
    """The values of ``sample`` on a local /metrics endpoint, summed by ``label``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == sample:
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0.0) + s.value
    return out


def caught_up(client: Any, group: str = "alerts") -> bool:
    """Whether ``group`` has read and acknowledged every detections entry."""
    for stream in LAYOUT.all_detections():
        if not client.exists(stream):
            continue
        last = client.xinfo_stream(stream)["last-generated-id"]
        groups = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
        info = groups.get(group)
        if info is None or info["last-delivered-id"] != last or info["pending"]:
            return False
    return True


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (seconds)")
    parser.add_argument("--seconds", type=float, default=None, help="per phase")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients")
    parser.add_argument("--images", type=int, default=None, help="images per gRPC request")
    parser.add_argument("--big-side", type=int, default=None, help="side of honest big images")
    parser.add_argument("--cameras", type=int, default=None, help="cameras with huge frames")
    parser.add_argument("--threads", type=int, default=2, help="model threads")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--service-env", action="append", default=[], help="KEY=VALUE for the inference service"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    clients = args.clients or (2 if args.quick else 8)
    big_side = args.big_side or (1500 if args.quick else 6000)
    n_cameras = args.cameras or (2 if args.quick else 8)
    limits = deploy_limits(SERVICES)
    from facemask.v1 import detector_pb2

    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    redis = RedisProcess(work / "redis").start()
    extra = dict(item.split("=", 1) for item in args.service_env)
    env = {"FACEMASK_INFERENCE_WARMUP": "false" if args.quick else "true", **extra}
    inference = Service(redis.url, args.threads, **env)
    alerts = Alerts(redis.url, work / "alerts")
    outcomes: dict[str, dict[str, int]] = {}
    try:
        inference.wait_ready(300)
        alerts.wait_ready()
        assert redis.proc is not None
        settings = _inference_settings(extra)
        grid = _largest_grid(settings.max_tiles)
        inputs_per_image = grid[0] * grid[1] + 1
        images = args.images or max(1, settings.max_queue_size // inputs_per_image)
        pids = {
            "inference": inference.proc.pid,
            "alerts": alerts.proc.pid,
            "redis": redis.proc.pid,
        }
        frame = jpeg(*FRAME_SIZE)
        big = jpeg(big_side, big_side, seed=1)
        bomb = lying_jpeg(16000, 16000)
        with Sampler(pids) as sampler:
            sampler.phase = "idle"
            time.sleep(min(seconds, 2.0))
            sampler.sample()

            sampler.phase = "grpc-max-tiles"
            tiles = f"{grid[0]}x{grid[1]}"
            tiled = detector_pb2.DetectRequest(
                images=[detector_pb2.Image(data=frame, frame_id=str(i)) for i in range(images)],
                tiles=tiles,
            )
            oversize = detector_pb2.DetectRequest(
                images=[detector_pb2.Image(data=frame) for _ in range(256)], tiles=tiles
            )
            outcomes["grpc-max-tiles"] = dict(
                grpc_load(inference.port, lambda _i: [tiled, tiled, oversize], clients, seconds)
            )
            sampler.sample()

            sampler.phase = "grpc-bombs"
            bombs = [
                detector_pb2.DetectRequest(images=[detector_pb2.Image(data=bomb)] * 64),
                detector_pb2.DetectRequest(images=[detector_pb2.Image(data=big)] * 4),
                b"\x0a\x10\x0a\xff\xff",  # malformed protobuf
            ]
            outcomes["grpc-bombs"] = dict(
                grpc_load(inference.port, lambda _i: bombs, clients, seconds)
            )
            sampler.sample()

            sampler.phase = "stream-bombs"
            import redis as redis_py

            client = redis_py.Redis.from_url(redis.url)
            cameras = [f"memcam{i}" for i in range(n_cameras)]
            stale = time.time() - 3600  # inference skips these as too old, undecoded
            written, rounds = 0, 0
            deadline = time.monotonic() + seconds
            while rounds < 3 or (time.monotonic() < deadline and rounds < 50):
                now = time.time()
                frames: list[Frame] = []
                for camera in cameras:
                    frames += [
                        (camera, big, big_side, big_side, stale),  # honest, huge
                        (camera, bomb, 640, 480, now),  # header says 16000x16000
                        (camera, big, 640, 480, now),  # really big_side x big_side
                    ]
                written += publish_frames(client, frames)
                rounds += 1
            outcomes["stream-bombs"] = {"frames": written}
            sampler.sample()

            sampler.phase = "dashboard"
            # Each camera's latest frame: half of them honest and huge, half lying. Cameras
            # of their own: a camera whose picture was drawn in an earlier phase keeps it
            # when its latest frame lies, so it would answer 200 where none is due.
            cameras = [f"dashcam{i}" for i in range(n_cameras)]
            last: list[Frame] = [
                (camera, big, big_side, big_side, stale)
                if i % 2 == 0
                else (camera, bomb if i % 4 == 1 else big, 640, 480, stale)
                for i, camera in enumerate(cameras)
            ]
            written += publish_frames(client, last)
            wait_until(
                lambda: caught_up(client),
                60,
                "the alert service to read every detections entry",
                interval=0.05,
            )
            outcomes["dashboard"] = dict(dashboard_load(alerts.port, cameras, clients, seconds))
            sampler.sample()
            client.close()
        requests = labelled(inference.metrics_port, "facemask_inference_requests_total", "outcome")
        renders = alerts.scrape().get("facemask_alerts_latest_renders_total", 0.0)
    finally:
        alerts.stop()
        inference.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows, verdicts = [], {}
    for name in (*SERVICES, "redis"):
        limit = limits.get(name, {}).get("limit")
        idle = sampler.peaks.get("idle", {}).get(name, 0)
        peak = sampler.peak(name)
        ok = limit is None or peak <= limit
        verdicts[name] = {
            "limit_bytes": limit,
            "limit_sources": limits.get(name, {}).get("sources", {}),
            "idle_rss_bytes": idle,
            "peak_rss_bytes": peak,
            "peak_by_phase": {phase: p.get(name, 0) for phase, p in sampler.peaks.items()},
            "pass": ok,
        }
        rows.append(
            [
                name,
                "-" if limit is None else f"{limit / MIB:.0f}",
                f"{idle / MIB:.0f}",
                f"{peak / MIB:.0f}",
                "-" if limit is None else f"{(limit - peak) / MIB:.0f}",
                max(sampler.peaks, key=lambda phase: sampler.peaks[phase].get(name, 0)),
                "PASS" if ok else "FAIL",
            ]
        )
    print_table(
        ["service", "limit MiB", "idle MiB", "peak MiB", "headroom MiB", "peak phase", "result"],
        rows,
    )
    for phase, counts in outcomes.items():
        print(f"{phase}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print("inference outcomes: " + ", ".join(f"{k}={v:g}" for k, v in sorted(requests.items())))
    payload = {
        "quick": args.quick,
        "seconds_per_phase": seconds,
        "clients": clients,
        "images_per_request": images,
        "tile_grid": list(grid),
        "big_side": big_side,
        "cameras": n_cameras,
        "services": verdicts,
        "outcomes": outcomes,
        "inference_requests": requests,
        "alerts_latest_renders": renders,
        "machine": machine_info(args.threads),
    }
    path = write_results("memory", payload, args.output)
    print(f"wrote {path}")
    return 0 if all(v["pass"] for v in verdicts.values()) else 1


def _largest_grid(max_tiles: int) -> tuple[int, int]:
    """The grid with the most tiles within ``max_tiles`` (and 8 a side), squarest first."""
    grids = [(rows, min(8, max_tiles // rows)) for rows in range(1, 9) if max_tiles // rows >= 1]
    return max(grids, key=lambda g: (g[0] * g[1], -abs(g[0] - g[1])))


def _inference_settings(extra: dict[str, str]) -> InferenceSettings:
    """The inference service's effective settings for the bench's environment."""
    from services.inference.config import InferenceSettings

    keys = {k.removeprefix("FACEMASK_INFERENCE_").lower(): v for k, v in extra.items()}
    return InferenceSettings(**keys)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
