"""Shared benchmark helpers: machine facts, matmul peak, timing, tables, JSON results.

Fairness rules every benchmark follows:

* every TensorFlow thing measured in one run (the matmul peak, the project's detector, the
  upstream loop) uses the same intra-op thread count (``--threads``, default: the cores
  this process may run on), so a ratio never compares different core counts;
* configurations are measured in interleaved rounds (A, B, C, A, B, C, ...) so that a burst
  of load from elsewhere on a shared machine hits every configuration alike, and each one
  reports its best round (its median is kept in the JSON too).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from facemask.dev.supervisor import (
    CallableProbe,
    ChildExitedError,
    ChildSpec,
    Supervisor,
    inherited_env,
    python_argv,
)
from facemask.dev.waiting import WaitTimeoutError
from facemask.model.runtime.base import usable_cpus
from facemask.model.variants import cpu_model_name

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL_GFLOP_PER_IMAGE = 1.52  # measured: one 260x260 image through the SSD (models/README)


def default_threads() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    return max(1, usable_cpus())


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    return cpu_model_name()


def cpu_flags(
    wanted: Sequence[str] = (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ),
) -> list[str]:
    """Which of the ``wanted`` SIMD features the CPU reports."""
    from facemask.model.runtime.base import cpu_flags as all_flags

    flags = all_flags()
    return [f for f in wanted if f in flags]


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import cv2

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": default_threads(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    except ImportError:
        info["tensorflow"] = None
    return info


# -- matmul peak ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatmulPeak:
    """Best float32 matmul rate seen, and every size's best."""

    gflops: float
    threads: int
    by_size: dict[int, float]
    repeats: int

    @property
    def compute_limit_images_per_s(self) -> float:
        """Images/s the model would reach if it ran at the matmul peak."""
        return compute_limit_images_per_s(self.gflops)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "gflops": self.gflops,
            "threads": self.threads,
            "by_size": {str(k): v for k, v in self.by_size.items()},
            "repeats": self.repeats,
            "gflop_per_image": MODEL_GFLOP_PER_IMAGE,
            "compute_limit_images_per_s": self.compute_limit_images_per_s,
        }


def best_peak(peaks: Sequence[MatmulPeak]) -> MatmulPeak:
    """The best of several peak measurements (a machine shared with others only ever
    measures low, so the highest is the closest to the truth)."""
    by_size: dict[int, float] = {}
    for peak in peaks:
        for n, gflops in peak.by_size.items():
            by_size[n] = max(by_size.get(n, 0.0), gflops)
    return MatmulPeak(
        max(p.gflops for p in peaks), peaks[0].threads, by_size, sum(p.repeats for p in peaks)
    )


def compute_limit_images_per_s(gflops: float) -> float:
    """``gflops / 1.52``: the model's images/s at the machine's float32 matmul peak."""
    return gflops / MODEL_GFLOP_PER_IMAGE


def measure_matmul_gflops(
    threads: int,
    sizes: Sequence[int] = (2048, 3072, 4096),
    repeats: int = 5,
    warmup: int = 2,
) -> MatmulPeak:
    """Float32 GFLOP/s of a square TensorFlow matmul on ``threads`` intra-op threads.

    Operands live in graph variables (no feed copy, no constant folding); the product is run
    without being fetched. Each size gets ``warmup`` untimed runs, then the best of
    ``repeats`` timed runs; the peak is the best over sizes. ``2 n^3`` flops per product.
    """
    import tensorflow as tf

    by_size: dict[int, float] = {}
    for n in sizes:
        graph = tf.Graph()
        with graph.as_default():
            a = tf.Variable(tf.random.uniform((n, n), -1.0, 1.0, dtype=tf.float32, seed=1))
            b = tf.Variable(tf.random.uniform((n, n), -1.0, 1.0, dtype=tf.float32, seed=2))
            product = tf.linalg.matmul(a, b)
            init = tf.compat.v1.global_variables_initializer()
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1
        )
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            session.run(init)
            for _ in range(warmup):
                session.run(product.op)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(product.op)
                best = min(best, time.perf_counter() - start)
        by_size[n] = 2.0 * n**3 / best / 1e9
    return MatmulPeak(max(by_size.values()), threads, by_size, repeats)


# -- timing -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    """Timed rounds of one configuration; each round processes ``items`` items."""

    name: str
    items: int
    seconds: list[float] = field(default_factory=list)

    @property
    def best_rate(self) -> float:
        """Items/s of the fastest round."""
        return self.items / min(self.seconds) if self.seconds else 0.0

    @property
    def median_rate(self) -> float:
        """Items/s of the median round."""
        return self.items / statistics.median(self.seconds) if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "items_per_round": self.items,
            "rounds": len(self.seconds),
            "round_seconds": [round(s, 6) for s in self.seconds],
            "best_per_s": self.best_rate,
            "median_per_s": self.median_rate,
        }


def run_interleaved(
    configs: Mapping[str, tuple[Callable[[], object], int]],
    rounds: int,
    warmup: int = 1,
) -> dict[str, Measurement]:
    """Time each ``name -> (fn, items)`` for ``rounds`` rounds, interleaving configurations.

    ``fn()`` processes ``items`` items per call. ``warmup`` untimed calls of each come first.
    """
    for fn, _ in configs.values():
        for _ in range(warmup):
            fn()
    results = {name: Measurement(name, items) for name, (_, items) in configs.items()}
    for _ in range(rounds):
        for name, (fn, _) in configs.items():
            start = time.perf_counter()
            fn()
            results[name].seconds.append(time.perf_counter() - start)
    return results


STEADY_WARMUP_S = 2.0
"""Seconds at the start of a load run that :func:`steady_rate` leaves out (at most a
quarter of the run): the pipeline filling its queues and batches."""


def steady_rate(
    completed: Sequence[float], load_start: float, load_end: float, warmup: float | None = None
) -> float:
    """Items completed per second in the steady part of a load run: those whose completion
    time (``completed``, wall-clock seconds) falls in ``[load_start + warmup, load_end)``
    (from when the pipeline has filled until the load stopped: what drains after it is not
    counted either), per second of that window. Below saturation it is the offered rate;
    at saturation, the rate the system keeps up, free of the ramp-up that a first-to-last
    count includes (which a short run cannot amortise). NaN for an empty window."""
    length = load_end - load_start
    if warmup is None:
        warmup = min(STEADY_WARMUP_S, 0.25 * length)
    begin = load_start + warmup
    if load_end <= begin:
        return float("nan")
    count = sum(1 for t in completed if begin <= t < load_end)
    return count / (load_end - begin)


# -- output -----------------------------------------------------------------------------------


def format_cell(value: object, digits: int = 2) -> str:
    """Table cell text: floats with ``digits`` decimals, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print :func:`format_table`."""
    print(format_table(headers, rows), flush=True)


def write_results(name: str, payload: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` as ``bench/results/<name>.json`` (or ``path``); return the path."""
    target = path or RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    tmp.replace(target)
    return target


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- service children -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("FACEMASK_SHARED_DIR", ROOT.parent / "shared"))
"""The project's data and models beside the checkout (``../shared``)."""
VIDEO = SHARED_DIR / "data" / "video" / "group4_masks.mp4"


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """Samples of a local /metrics endpoint, labels folded together (summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        text = reply.read()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


class ServiceChild:
    """A service (``python -m MODULE``) as a benchmark child process, output discarded.

    ``env`` is added to this process's environment minus the variables starting with
    ``drop_prefix`` (so a developer's settings do not leak in); ready when ``ready_metric``
    on ``metrics_port`` reads 1.
    """

    def __init__(
        self,
        module: str,
        env: Mapping[str, str],
        *,
        drop_prefix: str,
        metrics_port: int,
        ready_metric: str,
    ) -> None:
        self.module = module
        self.metrics_port = metrics_port
        self.ready_metric = ready_metric
        self.child = Supervisor(name="bench").start(
            ChildSpec(
                module,
                python_argv(module),
                env=inherited_env(env, drop_prefix=drop_prefix),
                cwd=ROOT,
                ready=CallableProbe(
                    lambda: self.scrape().get(ready_metric) == 1.0, f"{ready_metric} = 1"
                ),
            )
        )

    @property
    def proc(self) -> subprocess.Popen[Any]:
        """The child process."""
        assert self.child.proc is not None
        return self.child.proc

    def scrape(self) -> dict[str, float]:
        """The service's metrics (:func:`scrape`)."""
        return scrape(self.metrics_port)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the ready metric reads 1; raises ``RuntimeError`` on exit or timeout."""
        try:
            self.child.wait_ready(timeout)
        except ChildExitedError:
            raise RuntimeError(f"{self.module} exited during start-up") from None
        except WaitTimeoutError:
            raise RuntimeError(f"{self.module} did not become ready") from None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the service drains), then wait; kill after ``timeout``."""
        self.child.stop(grace=timeout)


# -- deploy memory limits ----------------------------------------------------------------

MIB_BYTES = 1024 * 1024
K8S_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
K8S_UNITS |= {"ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
COMPOSE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
COMPOSE_UNITS |= {"kb": 1024, "mb": 1024**2, "gb": 1024**3}
"""Compose (like docker's ``--memory``) counts ``512M`` in binary units: 512 MiB."""


def parse_quantity(text: str | int, units: Mapping[str, int] = K8S_UNITS) -> int:
    """Bytes of a memory quantity: Kubernetes by default (``512Mi``, ``4Gi``, ``1G`` =
    10**9), compose with ``units=COMPOSE_UNITS`` (``512M`` = 512 MiB)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).lower() not in units:
        raise ValueError(f"not a memory quantity: {text!r}")
    return int(float(match.group(1)) * units[match.group(2).lower()])


def deploy_limits(
    services: Sequence[str] = ("inference", "alerts", "ingest"), root: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Per service: the memory limit in bytes of each deploy file that sets one (its
    Kubernetes Deployment in ``deploy/k8s/base``, ``docker-compose.yml``), and the lowest
    of them (``limit``): what the service must stay under in production."""
    root = root or ROOT
    out: dict[str, dict[str, Any]] = {}
    for name in services:
        sources: dict[str, int] = {}
        manifest = root / "deploy" / "k8s" / "base" / name / "deployment.yaml"
        if manifest.exists():
            for doc in yaml.safe_load_all(manifest.read_text()):
                if not doc or doc.get("kind") != "Deployment":
                    continue
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    memory = container.get("resources", {}).get("limits", {}).get("memory")
                    if memory is not None and container.get("name", name) == name:
                        sources[str(manifest.relative_to(root))] = parse_quantity(memory)
        compose = root / "docker-compose.yml"
        if compose.exists():
            spec = yaml.safe_load(compose.read_text()).get("services", {}).get(name, {})
            memory = spec.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
            if memory is not None:
                sources["docker-compose.yml"] = parse_quantity(memory, COMPOSE_UNITS)
        out[name] = {"sources": sources, "limit": min(sources.values()) if sources else None}
    return out
