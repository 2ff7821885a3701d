"""A detector in a child process, driven by the model benchmark over stdin/stdout.

Some configurations cannot share a process with the others: TensorFlow's bf16 mixed
precision is a process-wide option that pays only when set before TensorFlow's first op.
:class:`WorkerClient` starts ``python -m bench.model_worker`` with a detector config; the
child builds the same frames as the parent (same source, count and encoding, so the same
bytes) and runs each named workload when asked. The parent times the round trip, so its
rounds interleave with the in-process configurations as usual (the pipe costs well under
a millisecond per round of 128 images).

Protocol: one JSON object per line. The child answers ``{"ready": true}`` once loaded, then
for each ``{"op": ...}`` one ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

from bench.common import ROOT


class WorkerError(RuntimeError):
    """The worker failed to start or to run a workload."""


class WorkerClient:
    """The parent's handle on one worker process."""

    def __init__(self, config: dict[str, Any], frames: int, source: str, threads: int) -> None:
        self.config = config
        spec = json.dumps(
            {"config": config, "frames": frames, "source": source, "threads": threads}
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.model_worker", spec],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        hello = self._read()
        if not hello.get("ready"):
            raise WorkerError(f"worker {config} did not start: {hello.get('error')}")
        self.precision = str(hello.get("precision", ""))

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"worker {self.config} exited (code {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one workload in the child; returns its reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise WorkerError(f"worker {self.config} {op}: {reply.get('error')}")
        return reply

    def workload(self, op: str, **args: Any) -> Callable[[], object]:
        """A callable for :func:`bench.common.run_interleaved`; it returns what the workload
        returned in the child (as :func:`bench.bench_model.run_workload` does in-process)."""
        return lambda: self.call(op, **args).get("result")

    def close(self) -> None:
        """Stop the child."""
        if self.proc.poll() is None:
            with contextlib.suppress(WorkerError, OSError, ValueError):
                self.call("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _serve(spec: dict[str, Any], stdin: TextIO, stdout: TextIO) -> None:
    from bench import bench_model
    from facemask.core.preprocess import decode_image, preprocess_batch
    from facemask.model.detector import create_detector

    config = dict(spec["config"])
    runtime = config.pop("runtime", "tensorflow")
    options = {**bench_model.THREAD_OPTIONS[runtime](int(spec["threads"])), **config}
    detector = create_detector(
        runtime=runtime, conf=bench_model.CONF, iou=bench_model.IOU, **options
    )
    frames, _ = bench_model.make_frames(int(spec["frames"]), str(spec["source"]))
    rgb_frames = [decode_image(data, reduce="full").rgb for data in frames]
    tensors = preprocess_batch(rgb_frames)
    detector.warmup((1, bench_model.DEFAULT_BATCH))

    def reply(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    reply({"ready": True, "precision": detector.precision})
    with ThreadPoolExecutor(bench_model.DECODE_WORKERS, thread_name_prefix="decode") as pool:
        for line in stdin:
            request = json.loads(line)
            op = request.get("op")
            try:
                if op == "quit":
                    reply({"ok": True})
                    return
                result = bench_model.run_workload(
                    detector, op, request, frames=frames, rgb=rgb_frames, tensors=tensors, pool=pool
                )
                reply({"ok": True, "result": result})
            except Exception as exc:  # reported to the parent, which fails the benchmark
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def main() -> int:
    """Entry point of the child (``python -m bench.model_worker SPEC_JSON``)."""
    spec = json.loads(sys.argv[1])
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # anything printed by libraries stays off the protocol pipe
    try:
        _serve(spec, sys.stdin, real_stdout)
    except Exception as exc:
        real_stdout.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"}))
        real_stdout.write("\n")
        real_stdout.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
