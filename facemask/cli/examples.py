"""The ``Examples:`` of the library's commands' ``--help``, by the command's ``prog``.

One place for all of them (the services' commands bring their own ``EXAMPLES``, as the
library never names the services). Each entry is a sequence of lines: a command as a user
would type it, or a ``# comment`` saying what the next one does. ``tests/facemask/cli/
test_help.py`` parses every command here with the real parser, so an example that no
longer parses fails the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DEV_SET = "../shared/data/facemask-dev"

EXAMPLES: Mapping[str, Sequence[str]] = {
    "facemask": (
        "# the whole pipeline on this machine: dashboard at http://127.0.0.1:8080",
        "facemask run",
        "# faces in a photo, one JSON line",
        "facemask detect photo.jpg",
    ),
    "facemask models": (
        "facemask models fetch",
        "facemask models list",
        "facemask models promote 3f2a9c01",
    ),
    "facemask models fetch": (
        "# verify the cached weights, download what is missing (FACEMASK_MODEL_MIRROR first)",
        "facemask models fetch",
        "facemask models fetch --group model --force",
    ),
    "facemask models list": (
        "# upstream and the stored versions; * marks the one promoted in this Redis",
        "facemask models list --redis-url redis://redis:6379/0",
        "facemask models list --json",
    ),
    "facemask models show": (
        "# the model card (parent, data sets, recipe, dev-set metrics) and the files",
        "facemask models show 3f2a9c01",
        "facemask models show upstream --verify",
    ),
    "facemask models promote": (
        "# every inference replica downloads, loads and swaps to it without stopping",
        "facemask models promote 3f2a9c01 --redis-url redis://redis:6379/0",
        "facemask models promote upstream --by 'night shift'",
    ),
    "facemask models rollback": (
        "# back to the version the promoted one replaced",
        "facemask models rollback --redis-url redis://redis:6379/0",
    ),
    "facemask models active": ("facemask models active --redis-url redis://redis:6379/0",),
    "facemask models artifacts": ("facemask models artifacts",),
    "facemask models dir": ("facemask models dir",),
    "facemask models build": (
        "facemask models build",
        "facemask models build --variant int8 --calibration ../shared/data/facemask-dev/images",
    ),
    "facemask detect": (
        "# one JSON line per image or frame on stdout; every image and video below photos/",
        "facemask detect photos/",
        "# only JPEGs, annotated copies (videos as MP4) mirrored under out/",
        "facemask detect --glob '*.jpg' --annotate out/ photos/ clip.mp4",
        "# a stream or a camera, bounded",
        "facemask detect --max-frames 250 rtsp://user:pass@cam.local:554/stream",
        "facemask detect --duration 60 --annotate out/ 0",
        "# a trained version of the local store (facemask models list), its int8 file",
        "facemask detect --model 3f2a9c01 --runtime tflite --variant int8 photos/",
        "# through a running inference service (facemask run, serve-inference)",
        "facemask detect --server 127.0.0.1:50051 clip.mp4",
    ),
    "facemask eval": (
        "# COCO AP on the dev set; a progress bar on a terminal, the table on stdout",
        f"facemask eval --annotations {DEV_SET}/annotations.json --images {DEV_SET}/images",
        "# tiled inference for small faces, one JSON object",
        f"facemask eval --annotations {DEV_SET}/annotations.json --images {DEV_SET}/images "
        "--tiles 2x2 --json",
        "# a trained version against the upstream model",
        f"facemask eval --model 3f2a9c01 --annotations {DEV_SET}/annotations.json "
        f"--images {DEV_SET}/images",
    ),
    "facemask run": (
        "# the sample images as a camera; Ctrl-C stops everything",
        "facemask run",
        "# two cameras, the first one named",
        "facemask run --source lobby=rtsp://user:secret@cam1.local/stream --source 0",
        "facemask run --source clip.mp4 --prometheus --duration 120",
    ),
    "facemask dataset": ("facemask dataset export --reviewed --out train/",),
    "facemask dataset export": (
        "# the reviewed alerts of the local dashboard as a COCO set",
        "facemask dataset export --reviewed --out train/",
        "facemask dataset export --reviewed --url http://alerts:8080 --camera lobby "
        "--since 2025-01-01 --out train/",
    ),
    "facemask train": (
        "# the default recipe (make train): fine-tune upstream, choose the epoch on the dev set",
        f"facemask train --data ../shared/data/facemask-train/annotations.json "
        f"--images ../shared/data/facemask-train/images --dev-data {DEV_SET}/annotations.json "
        f"--dev-images {DEV_SET}/images --unlabelled ../shared/data/video/group4_masks.mp4 "
        "--out runs/default",
        "# add your reviewed alerts to the public set, start from a version you trained before",
        f"facemask train --data ../shared/data/facemask-train/annotations.json "
        f"--images ../shared/data/facemask-train/images --data train/annotations.json "
        f"--images train/images --dev-data {DEV_SET}/annotations.json "
        f"--dev-images {DEV_SET}/images --unlabelled lobby.mp4 --from 3f2a9c1d --out runs/lobby",
        "# continue an interrupted run",
        f"facemask train --data train/annotations.json --images train/images "
        f"--dev-data {DEV_SET}/annotations.json --dev-images {DEV_SET}/images "
        "--out runs/lobby --resume",
    ),
}
"""``prog`` -> its example lines."""
