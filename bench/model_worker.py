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

from bench import model_workloads as workloads
from bench.common import ROOT
from facemask.dev.supervisor import ChildSpec, Supervisor, python_argv


class WorkerError(RuntimeError):
    """The worker failed to start or to run a workload."""


class WorkerClient:
    """The parent's handle on one worker process (a supervised child talking over its
    stdin / stdout; its stderr goes to ours, prefixed ``worker``)."""

    def __init__(self, config: dict[str, Any], frames: int, source: str, threads: int) -> None:
        self.config = config
        spec = json.dumps(
            {"config": config, "frames": frames, "source": source, "threads": threads}
        )
        self.child = Supervisor(sys.stderr, name="bench").start(
            ChildSpec(
                "worker",
                python_argv("bench.model_worker", spec),
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                cwd=ROOT,
                pipes=True,
                echo=True,
                grace=5.0,
            )
        )
        hello = self._read()
        if not hello.get("ready"):
            raise WorkerError(f"worker {config} did not start: {hello.get('error')}")
        self.precision = str(hello.get("precision", ""))

    def _read(self) -> dict[str, Any]:
        line = self.child.stdout.readline()
        if not line:
            raise WorkerError(f"worker {self.config} exited (code {self.child.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one workload in the child; returns its reply."""
        self.child.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.child.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise WorkerError(f"worker {self.config} {op}: {reply.get('error')}")
        return reply

    def workload(self, op: str, **args: Any) -> Callable[[], object]:
        """A callable for :func:`bench.common.run_interleaved`; it returns what the workload
        returned in the child (as :func:`bench.model_workloads.run_workload` does
        in-process)."""
        return lambda: self.call(op, **args).get("result")

    def close(self) -> None:
        """Stop the child: ask it to quit, give it 10 s, then SIGTERM / SIGKILL."""
        if self.child.alive():
            with contextlib.suppress(WorkerError, OSError, ValueError):
                self.call("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.child.wait(10)
        self.child.stop()


def _serve(spec: dict[str, Any], stdin: TextIO, stdout: TextIO) -> None:
    from facemask.core.preprocess import decode_image, preprocess_batch
    from facemask.model.detector import create_detector

    config = dict(spec["config"])
    runtime = config.pop("runtime", "tensorflow")
    options = {**workloads.THREAD_OPTIONS[runtime](int(spec["threads"])), **config}
    detector = create_detector(runtime=runtime, conf=workloads.CONF, iou=workloads.IOU, **options)
    frames, _ = workloads.make_frames(int(spec["frames"]), str(spec["source"]))
    rgb_frames = [decode_image(data, reduce="full").rgb for data in frames]
    tensors = preprocess_batch(rgb_frames)
    detector.warmup((1, workloads.DEFAULT_BATCH))

    def reply(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    reply({"ready": True, "precision": detector.precision})
    with ThreadPoolExecutor(workloads.DECODE_WORKERS, thread_name_prefix="decode") as pool:
        for line in stdin:
            request = json.loads(line)
            op = request.get("op")
            try:
                if op == "quit":
                    reply({"ok": True})
                    return
                result = workloads.run_workload(
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
