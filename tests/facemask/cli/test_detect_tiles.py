"""``facemask detect --tiles``: local and through the inference service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.facemask.cli.test_detect import run_cli  # noqa: F401 (fixture)


@pytest.mark.model
@pytest.mark.slow
def test_tiles_local_and_server_agree_and_add_small_faces(
    run_cli: Any,  # noqa: F811
    shared_dir: Path,
    detector: Any,
) -> None:
    from services.inference.config import InferenceSettings
    from services.inference.service import InferenceService

    images = sorted((shared_dir / "data" / "facemask-dev" / "images").iterdir())[:6]
    assert images, "the dev set has no images"
    paths = [str(p) for p in images]
    code, plain, err = run_cli("--conf", "0.3", *paths)
    assert code == 0, err
    code, tiled, err = run_cli("--conf", "0.3", "--tiles", "2x2", *paths)
    assert code == 0, err
    assert [line["source"] for line in tiled] == paths
    # Tiles see small faces the squeezed full frame misses.
    assert sum(len(x["detections"]) for x in tiled) > sum(len(x["detections"]) for x in plain)
    settings = InferenceSettings(
        host="127.0.0.1", port=0, metrics_port=0, streams=False, decode_reduce="full"
    )
    service = InferenceService(settings, detector=detector)
    service.start()
    try:
        code, remote, err = run_cli(
            "--conf", "0.3", "--tiles", "2x2", "--server", f"127.0.0.1:{service.port}", *paths
        )
    finally:
        service.stop()
    assert code == 0, err
    for a, b in zip(remote, tiled, strict=True):
        assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
        assert [d["box"] for d in a["detections"]] == [d["box"] for d in b["detections"]]


def test_bad_tiles_option(run_cli: Any) -> None:  # noqa: F811
    with pytest.raises(SystemExit):
        run_cli("--tiles", "2by2", "x.jpg")


def test_variant_needs_tflite(run_cli: Any, samples_dir: Path) -> None:  # noqa: F811
    code, lines, err = run_cli("--variant", "int8", str(samples_dir))
    assert code == 2 and not lines
    assert "--variant applies to --runtime tflite only" in err
