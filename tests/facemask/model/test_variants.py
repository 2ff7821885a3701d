"""Choosing the model variant by measurement: the pure choice, the measurer with a fake
clock, the cache (hit, miss, corrupt, other CPU / model version) and the auto runtime
wired with fake runtimes (no TensorFlow)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facemask.model import variants as mv
from facemask.model.runtime import auto, parse_runtime_config
from tests.fixtures.registry import small_card

TF32 = mv.Variant("tensorflow", "float32")
BF16 = mv.Variant("tensorflow", "bf16")
LITE32 = mv.Variant("tflite", "float32")
INT8 = mv.Variant("tflite", "int8")
CARD = {"tensorflow-float32": 0.0, "tensorflow-bf16": 0.0043, "tflite-float32": 0.0,
        "tflite-int8": -0.0052}  # fmt: skip


def rates(**by_key: float) -> list[mv.Measurement]:
    return [mv.Measurement(mv.Variant.parse(k.replace("_", "-")), v) for k, v in by_key.items()]


@pytest.mark.parametrize(
    ("measured", "deltas", "tolerance", "expected", "rejected"),
    [
        # this AMD EPYC (issue 15): int8 fastest and within tolerance
        (rates(tensorflow_bf16=223, tflite_float32=120, tflite_int8=385), CARD, 0.01,
         "tflite-int8", {}),
        # the AMX Xeon (README): bf16 beats int8
        (rates(tensorflow_bf16=600, tflite_float32=156, tflite_int8=458), CARD, 0.01,
         "tensorflow-bf16", {}),
        # int8 beyond a tighter tolerance
        (rates(tensorflow_bf16=223, tflite_int8=385), CARD, 0.005, "tensorflow-bf16",
         {"tflite-int8": "AP50 -0.0052 beyond 0.005"}),
        # a variant without a recorded accuracy is never chosen
        (rates(tensorflow_float32=110, tflite_int8=385), {"tensorflow-float32": 0.0}, 0.01,
         "tensorflow-float32", {"tflite-int8": "accuracy unknown"}),
        # a failed (zero) measurement is not eligible
        (rates(tensorflow_float32=110, tflite_int8=0.0), CARD, 0.01, "tensorflow-float32",
         {"tflite-int8": "not measured"}),
        # ties go to the earlier variant (TensorFlow float32 before TFLite float32)
        (rates(tflite_float32=150, tensorflow_float32=150), CARD, 0.01, "tensorflow-float32",
         {}),
        # an accuracy gain beyond the tolerance is also a different model: rejected
        (rates(tensorflow_float32=110, tensorflow_bf16=223), {**CARD, "tensorflow-bf16": 0.02},
         0.01, "tensorflow-float32", {"tensorflow-bf16": "AP50 +0.0200 beyond 0.01"}),
    ],
)  # fmt: skip
def test_choose(
    measured: list[mv.Measurement],
    deltas: dict[str, float],
    tolerance: float,
    expected: str,
    rejected: dict[str, str],
) -> None:
    choice = mv.choose(measured, deltas, tolerance)
    assert choice.variant.key == expected
    assert choice.rejected == rejected
    assert choice.images_per_second == max(
        m.images_per_second for m in measured if m.variant.key == expected
    )
    assert choice.ap50_delta == deltas[expected]
    fields = choice.log_fields()
    assert fields["variant"] == expected and set(fields["measured"]) == {
        m.variant.key for m in measured
    }


def test_choose_raises_when_nothing_is_eligible() -> None:
    with pytest.raises(mv.NoVariantError, match="tflite-int8: accuracy unknown"):
        mv.choose(rates(tflite_int8=385), {})
    with pytest.raises(mv.NoVariantError, match="none measured"):
        mv.choose([], CARD)


def test_variant_keys_round_trip_and_options() -> None:
    for variant in mv.ALL_VARIANTS:
        assert mv.Variant.parse(variant.key) == variant
    assert INT8.options() == {"variant": "int8"} and BF16.options() == {"precision": "bf16"}
    with pytest.raises(ValueError):
        mv.Variant.parse("tflite")


class FakeClock:
    """Each ``infer`` advances the clock by ``cost`` seconds per image."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRuntime:
    input_size = (260, 260)
    max_batch_size = None

    def __init__(self, clock: FakeClock, seconds_per_image: float, name: str = "fake") -> None:
        self.clock, self.cost, self.name = clock, seconds_per_image, name
        self.calls: list[int] = []
        self.closed = False
        self.precision = "float32"

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert batch.shape[1:] == (260, 260, 3) and batch.dtype == np.float32
        self.calls.append(len(batch))
        self.clock.now += self.cost * len(batch)
        return np.zeros((len(batch), 5972, 4), np.float32), np.zeros(
            (len(batch), 5972, 2), np.float32
        )

    def close(self) -> None:
        self.closed = True


def test_measure_rate_times_warm_batches_with_the_injected_clock() -> None:
    clock = FakeClock()
    runtime = FakeRuntime(clock, 1 / 400)
    rate = mv.measure_rate(runtime.infer, 32, warm_batches=1, timed_batches=2, timer=clock)
    assert rate == pytest.approx(400)
    assert runtime.calls == [32, 32, 32]  # one warm, two timed


def test_measure_rate_stops_at_its_budget() -> None:
    clock = FakeClock()
    runtime = FakeRuntime(clock, 1 / 32)  # one second per batch of 32
    rate = mv.measure_rate(runtime.infer, 32, timed_batches=5, budget_s=0.5, timer=clock)
    assert rate == pytest.approx(32) and runtime.calls == [32, 32]


def test_measure_skips_a_variant_that_fails_to_load() -> None:
    clock = FakeClock()

    def create(variant: mv.Variant) -> FakeRuntime:
        if variant == LITE32:
            raise OSError("not built")
        return FakeRuntime(clock, {TF32: 1 / 110, INT8: 1 / 385}[variant])

    measured, runtimes = mv.measure([TF32, LITE32, INT8], create, 8, timer=clock)
    assert {m.variant.key: round(m.images_per_second) for m in measured} == {
        "tensorflow-float32": 110,
        "tflite-int8": 385,
    }
    assert set(runtimes) == {"tensorflow-float32", "tflite-int8"}


KEY = {"cpu": "AMD EPYC 9R14", "model_version": "6a2072385eb0", "batch_size": 32, "threads": 2}


def test_cache_hit_after_save(tmp_path: Path) -> None:
    path = tmp_path / "variant-choice.json"
    assert mv.load_cache(path, **KEY) is None  # miss: absent
    saved = rates(tensorflow_bf16=223.0, tflite_int8=385.0)
    mv.save_cache(path, saved, **KEY)
    assert mv.load_cache(path, **KEY) == saved
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "other",
    [
        {"cpu": "Intel(R) Xeon(R) Platinum 8488C"},
        {"model_version": "000000000000"},
        {"batch_size": 16},
        {"threads": 4},
        {"interpreters": 2},
    ],
)
def test_cache_of_another_cpu_model_or_setup_is_a_miss(tmp_path: Path, other: dict) -> None:
    path = tmp_path / "variant-choice.json"
    mv.save_cache(path, rates(tflite_int8=385.0), **{**KEY, **other})
    assert mv.load_cache(path, **KEY) is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        json.dumps({**{"schema": 1, "cpu": KEY["cpu"], "model": KEY["model_version"]},
                    "batch_size": 32, "threads": 2, "images_per_second": {"tflite": 3}}),
        json.dumps({"schema": 1, "cpu": KEY["cpu"], "model": KEY["model_version"],
                    "batch_size": 32, "threads": 2, "images_per_second": {"tflite-int8": -1}}),
        json.dumps({"schema": 1, "cpu": KEY["cpu"], "model": KEY["model_version"],
                    "batch_size": 32, "threads": 2, "images_per_second": []}),
    ],
)  # fmt: skip
def test_corrupt_cache_is_a_miss(tmp_path: Path, content: str) -> None:
    path = tmp_path / "variant-choice.json"
    path.write_text(content)
    assert mv.load_cache(path, **KEY) is None


def test_card_deltas(tmp_path: Path) -> None:
    card = tmp_path / "variants.json"
    card.write_text(
        json.dumps(
            {"models": {"abc": {"variants": {"tensorflow-float32": {"ap50": 0.42},
                                             "tflite-int8": {"ap50": 0.41}}}}}
        )
    )  # fmt: skip
    assert mv.load_ap50_deltas("abc", card) == pytest.approx(
        {"tensorflow-float32": 0.0, "tflite-int8": -0.01}
    )
    assert mv.load_ap50_deltas("other", card) == {}
    assert mv.load_ap50_deltas("abc", tmp_path / "absent.json") == {}


def test_card_deltas_follow_the_calibration_of_the_built_int8(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    card = tmp_path / "variants.json"
    int8 = {"ap50": 0.41, "calibrations": {"dev": {"ap50": 0.41}, "samples": {"ap50": 0.415}}}
    card.write_text(
        json.dumps({"models": {"abc": {"variants": {"tensorflow-float32": {"ap50": 0.42},
                                                    "tflite-int8": int8}}}})
    )  # fmt: skip
    deltas = mv.load_ap50_deltas("abc", card, calibrations={"tflite-int8": "samples"})
    assert deltas["tflite-int8"] == pytest.approx(-0.005)
    assert mv.load_ap50_deltas("abc", card)["tflite-int8"] == pytest.approx(-0.01)
    for unknown in ("own-frames", None):  # other frames, or no build stamp
        with caplog.at_level("WARNING", logger=mv.__name__):
            deltas = mv.load_ap50_deltas("abc", card, calibrations={"tflite-int8": unknown})
        assert set(deltas) == {"tensorflow-float32"}
        assert "not in the accuracy card" in caplog.text


def test_the_images_default_calibration_is_in_the_card(samples_dir: Path) -> None:
    """The inference image calibrates int8 on the three sample images: the card holds the
    dev-set AP50 of that calibration (else auto would never choose int8 in the image)."""
    from facemask.model import quantize, store

    files = quantize.calibration_images(samples_dir, quantize.DEFAULT_CALIBRATION_LIMIT)
    assert len(files) == 3
    sha256 = store.find_artifact("face_mask_detection.pb").sha256
    deltas = mv.load_ap50_deltas(
        sha256, calibrations={"tflite-int8": quantize._files_digest(files)}
    )
    assert abs(deltas["tflite-int8"]) <= mv.DEFAULT_TOLERANCE


def test_built_calibration_reads_the_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facemask.model import quantize

    monkeypatch.setenv("FACEMASK_MODEL_DIR", str(tmp_path))
    assert quantize.built_calibration("int8") is None
    stamp = tmp_path / "face_mask_detection.int8.tflite.json"
    stamp.write_text(json.dumps({"key": {"calibration_sha256": "c0ffee"}}))
    assert quantize.built_calibration("int8") == "c0ffee"
    stamp.write_text("{broken")
    assert quantize.built_calibration("int8") is None


def test_the_project_card_covers_the_pinned_model() -> None:
    from facemask.model import store

    sha256 = store.find_artifact("face_mask_detection.pb").sha256
    deltas = mv.load_ap50_deltas(sha256)
    assert set(deltas) == {v.key for v in mv.ALL_VARIANTS}
    assert all(abs(d) <= mv.DEFAULT_TOLERANCE for d in deltas.values())


# -- the auto runtime, with fake variants ----------------------------------------------


@pytest.fixture()
def fake_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[mv.Variant, float]], tuple[FakeClock, list[str]]]]:
    """Fake variants with given images/s; the model cache in ``tmp_path``."""
    monkeypatch.setenv("FACEMASK_MODEL_DIR", str(tmp_path))
    monkeypatch.delenv(mv.CACHE_DIR_ENV, raising=False)
    (tmp_path / "face_mask_detection.pb").write_bytes(b"fake graph")
    sha256 = mv.modelstore.sha256_file(tmp_path / "face_mask_detection.pb")
    monkeypatch.setattr(
        mv,
        "load_ap50_deltas",
        lambda sha, path=None, calibrations=None: CARD if sha == sha256 else {},
    )

    def install(speeds: dict[mv.Variant, float]) -> tuple[FakeClock, list[str]]:
        clock = FakeClock()
        created: list[str] = []

        def create(config: Any, variant: mv.Variant, path: Path | None) -> FakeRuntime:
            created.append(variant.key)
            runtime = FakeRuntime(clock, 1 / speeds[variant], name=variant.runtime)
            runtime.precision = variant.precision
            return runtime

        def child(
            config: Any, variants: list[mv.Variant], files: Any = None
        ) -> list[mv.Measurement]:
            # what the child process would report: the rate, no runtime left open here
            created.extend(f"child:{v.key}" for v in variants)
            return [mv.Measurement(v, speeds[v]) for v in variants]

        monkeypatch.setattr(auto, "available_variants", lambda **_: list(speeds))
        monkeypatch.setattr(auto, "_create_variant", create)
        monkeypatch.setattr(auto, "measure_in_child", child)
        monkeypatch.setattr(auto, "machine", lambda: "x86_64")
        return clock, created

    yield install


def test_auto_measures_chooses_and_caches(fake_variants: Any, tmp_path: Path) -> None:
    clock, created = fake_variants({BF16: 223.0, LITE32: 120.0, INT8: 385.0})
    config = parse_runtime_config({"type": "auto", "batch_size": 8, "threads": 2})
    runtime = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
    assert runtime.selection.variant == INT8 and not runtime.selection.cached
    assert runtime.selection.images_per_second == pytest.approx(385.0)
    assert created == ["tensorflow-bf16", "tflite-float32", "tflite-int8"]  # measured once each
    cache = json.loads((tmp_path / mv.CACHE_FILE).read_text())
    assert cache["batch_size"] == 8 and cache["cpu"] == mv.cpu_model_name()
    assert cache["images_per_second"]["tflite-int8"] == pytest.approx(385.0)

    created.clear()  # a restart: the cache answers, only the chosen variant loads
    again = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
    assert again.selection.variant == INT8 and again.selection.cached
    assert created == ["tflite-int8"]


def test_auto_remeasures_when_the_cache_is_corrupt(fake_variants: Any, tmp_path: Path) -> None:
    clock, created = fake_variants({BF16: 600.0, INT8: 458.0})
    (tmp_path / mv.CACHE_FILE).write_text("\x00garbage")
    config = parse_runtime_config({"type": "auto", "batch_size": 4})
    runtime = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
    assert runtime.selection.variant == BF16 and not runtime.selection.cached
    assert set(created) == {"tensorflow-bf16", "tflite-int8"}
    assert json.loads((tmp_path / mv.CACHE_FILE).read_text())["model"]  # rewritten


def test_auto_rejects_a_model_path() -> None:
    config = parse_runtime_config({"type": "auto", "model_path": "/x.pb"})
    with pytest.raises(ValueError, match="chooses its model file"):
        config.create()


def test_available_variants_follow_the_model_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEMASK_MODEL_DIR", str(tmp_path))
    monkeypatch.setattr(auto, "native_bf16", lambda: True)
    monkeypatch.setattr("facemask.model.runtime.tensorflow._PROCESS_STATE", {})
    assert auto.available_variants(auto.builtin_files()) == []
    (tmp_path / "face_mask_detection.pb").write_bytes(b"graph")
    assert auto.available_variants(auto.builtin_files()) == [
        BF16
    ]  # one TensorFlow precision per process
    (tmp_path / "face_mask_detection.int8.tflite").write_bytes(b"model")
    assert auto.available_variants(auto.builtin_files()) == [BF16, INT8]
    monkeypatch.setattr(auto, "native_bf16", lambda: False)
    (tmp_path / "face_mask_detection.float32.tflite").write_bytes(b"model")
    assert auto.available_variants(auto.builtin_files()) == [TF32, LITE32, INT8]
    # measured in child processes (one per precision): both, whatever the CPU flags say
    assert auto.available_variants(auto.builtin_files(), every_precision=True) == [
        TF32,
        BF16,
        LITE32,
        INT8,
    ]
    # a process whose TensorFlow already runs in bf16 measures bf16 (only)
    monkeypatch.setattr("facemask.model.runtime.tensorflow._PROCESS_STATE", {"precision": "bf16"})
    assert auto.available_variants(auto.builtin_files())[0] == BF16
    assert auto.available_variants(auto.builtin_files(), every_precision=True) == [
        BF16,
        LITE32,
        INT8,
    ]


# -- where the cache lives (read-only images) ------------------------------------------


@pytest.fixture()
def cache_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A configured, a model and a temporary directory, all writable to begin with; a
    directory below a regular file stands for one on a read-only filesystem."""
    dirs = {name: tmp_path / name for name in ("configured", "models", "tmp")}
    monkeypatch.setenv(mv.CACHE_DIR_ENV, str(dirs["configured"]))
    monkeypatch.setenv("FACEMASK_MODEL_DIR", str(dirs["models"]))
    monkeypatch.setattr(mv.tempfile, "tempdir", str(dirs["tmp"]))
    (tmp_path / "file").write_text("not a directory")
    return dirs


def _unwritable(tmp_path: Path, name: str) -> str:
    return str(tmp_path / "file" / name)


def test_cache_goes_to_the_configured_directory_first(cache_dirs: dict[str, Path]) -> None:
    assert mv.cache_path() == cache_dirs["configured"] / mv.CACHE_FILE
    assert cache_dirs["configured"].is_dir()  # created


def test_cache_falls_back_to_a_writable_directory_and_says_so(
    cache_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(mv.CACHE_DIR_ENV, _unwritable(tmp_path, "configured"))
    with caplog.at_level("INFO", logger=mv.__name__):
        assert mv.cache_path() == cache_dirs["models"] / mv.CACHE_FILE
    assert "not writable" in caplog.text
    monkeypatch.delenv(mv.CACHE_DIR_ENV)  # a read-only image without the setting
    monkeypatch.setenv("FACEMASK_MODEL_DIR", _unwritable(tmp_path, "models"))
    assert mv.cache_path() == cache_dirs["tmp"] / "facemask" / mv.CACHE_FILE


def test_no_writable_cache_directory_is_logged_and_not_an_error(
    cache_dirs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(mv.CACHE_DIR_ENV, _unwritable(tmp_path, "configured"))
    monkeypatch.setenv("FACEMASK_MODEL_DIR", _unwritable(tmp_path, "models"))
    monkeypatch.setattr(mv.tempfile, "tempdir", _unwritable(tmp_path, "tmp"))
    with caplog.at_level("WARNING", logger=mv.__name__):
        assert mv.cache_path() is None
    assert mv.CACHE_DIR_ENV in caplog.text and "not cached" in caplog.text


def test_auto_measures_at_every_start_without_a_writable_cache(
    fake_variants: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, created = fake_variants({TF32: 110.0, INT8: 385.0})
    monkeypatch.setattr(mv, "cache_path", lambda: None)
    config = parse_runtime_config({"type": "auto", "batch_size": 4})
    for _ in range(2):
        created.clear()
        runtime = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
        assert runtime.selection.variant == INT8 and not runtime.selection.cached
        assert created == ["tensorflow-float32", "tflite-int8"]
    assert not (tmp_path / mv.CACHE_FILE).exists()


# -- TensorFlow measured out of process; int8 on 64-bit ARM ----------------------------


@pytest.mark.parametrize(
    ("speeds", "winner", "created_after"),
    [
        # TFLite wins: TensorFlow was only measured in the child, never created here
        ({BF16: 223.0, LITE32: 120.0, INT8: 385.0}, INT8, []),
        # TensorFlow wins: created here once, after the child measured it
        ({BF16: 600.0, INT8: 458.0}, BF16, ["tensorflow-bf16"]),
        # both precisions, a child each: float32 wins where bf16 is emulated (no CPU flag
        # decides it)
        ({TF32: 110.0, BF16: 40.0, INT8: 90.0}, TF32, ["tensorflow-float32"]),
    ],
)
def test_tensorflow_is_measured_in_a_child_process(
    fake_variants: Any,
    speeds: dict[mv.Variant, float],
    winner: mv.Variant,
    created_after: list[str],
) -> None:
    clock, created = fake_variants(speeds)
    config = parse_runtime_config({"type": "auto", "batch_size": 4, "cache": False})
    runtime = auto.select_runtime(config, timer=clock, isolate_tensorflow=True)  # type: ignore[arg-type]
    lite = [v.key for v in speeds if v.runtime == "tflite"]
    children = [f"child:{v.key}" for v in speeds if v.runtime == "tensorflow"]
    assert created == [*lite, *children, *created_after]
    assert runtime.selection.variant == winner
    assert [m.variant for m in runtime.selection.measurements] == list(speeds)  # in order


@pytest.mark.parametrize(
    ("speeds", "deltas", "measured"),
    [
        # int8 built and accurate: the only variant loaded and measured
        ({BF16: 600.0, LITE32: 120.0, INT8: 100.0}, CARD, ["tflite-int8"]),
        # no int8 model: the usual measurement
        ({TF32: 30.0, LITE32: 40.0}, CARD, ["tensorflow-float32", "tflite-float32"]),
        # int8 beyond the tolerance: the usual measurement, int8 rejected
        ({TF32: 30.0, INT8: 90.0}, {**CARD, "tflite-int8": -0.05},
         ["tensorflow-float32", "tflite-int8"]),
    ],
)  # fmt: skip
def test_arm64_takes_int8_without_measuring_tensorflow(
    fake_variants: Any,
    monkeypatch: pytest.MonkeyPatch,
    speeds: dict[mv.Variant, float],
    deltas: dict[str, float],
    measured: list[str],
) -> None:
    clock, created = fake_variants(speeds)
    monkeypatch.setattr(mv, "load_ap50_deltas", lambda sha, path=None, calibrations=None: deltas)
    monkeypatch.setattr(auto, "machine", lambda: "aarch64")
    config = parse_runtime_config({"type": "auto", "batch_size": 4, "cache": False})
    runtime = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
    assert [m.variant.key for m in runtime.selection.measurements] == measured
    if measured == ["tflite-int8"]:
        assert runtime.selection.variant == INT8 and created == ["tflite-int8"]
        assert runtime.selection.rejected == {
            "tensorflow-bf16": "not measured on aarch64: tflite-int8 preferred",
            "tflite-float32": "not measured on aarch64: tflite-int8 preferred",
        }
    else:
        assert (
            runtime.selection.variant.key
            == max(
                (m for m in runtime.selection.measurements if abs(deltas[m.variant.key]) <= 0.01),
                key=lambda m: m.images_per_second,
            ).variant.key
        )


def test_child_process_measures_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child process protocol with a real (small) TFLite variant; a child that fails
    is logged and measures nothing."""
    pytest.importorskip("ai_edge_litert")
    from facemask.model import quantize

    if not quantize.variant_path("int8").is_file():
        pytest.skip("int8 model not built (facemask models build)")
    for config in (auto.AutoConfig(batch_size=2, threads=1), auto.AutoConfig(batch_size=2)):
        (measurement,) = auto.measure_in_child(config, [INT8])
        assert measurement.variant == INT8 and measurement.images_per_second > 0
    monkeypatch.setenv("FACEMASK_MODEL_DIR", "/nonexistent-model-dir")
    assert auto.measure_in_child(config, [INT8]) == []


def test_a_cache_without_a_new_variant_is_a_miss(fake_variants: Any, tmp_path: Path) -> None:
    """An image rebuilt with the int8 model (a persistent cache volume from before):
    measured again, int8 included, instead of answering from the old rates."""
    clock, created = fake_variants({BF16: 223.0})
    config = parse_runtime_config({"type": "auto", "batch_size": 4})
    first = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
    assert first.selection.variant == BF16
    clock, created = fake_variants({BF16: 223.0, INT8: 385.0})
    again = auto.select_runtime(config, timer=clock, isolate_tensorflow=False)  # type: ignore[arg-type]
    assert again.selection.variant == INT8 and not again.selection.cached
    assert created == ["tensorflow-bf16", "tflite-int8"]


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        (
            {"tensorflow-float32": 0.68, "tflite-float32": 0.68, "tflite-int8": 0.675},
            {"tensorflow-float32": 0.0, "tflite-float32": 0.0, "tflite-int8": -0.005},
        ),
        ({"tflite-int8": 0.5}, {}),  # no float32 reference: no deltas
        ("not a mapping", {}),
        ({"tensorflow-float32": "n/a"}, {}),
        (None, {}),
    ],
)
def test_card_ap50_deltas(variants: Any, expected: dict[str, float]) -> None:
    card = small_card() if variants is None else small_card(metrics={"variants": variants})
    got = mv.card_ap50_deltas(card)
    assert got.keys() == expected.keys()
    for key, delta in expected.items():
        assert got[key] == pytest.approx(delta)


# -- auto over a given model's files (a stored version) --------------------------------


def _given_files(
    tmp_path: Path, deltas: dict[str, float], *, source: bool = True
) -> auto.ModelFiles:
    tflite = {}
    for precision in ("float32", "int8"):
        tflite[precision] = tmp_path / f"model.{precision}.tflite"
        tflite[precision].write_bytes(b"model")
    pb = tmp_path / "model.pb"
    pb.write_bytes(b"graph")
    return auto.ModelFiles(
        pb if source else None,
        tflite,
        deltas,
        model_id="v1",
        cache_file="variant-choice.v1.json",
    )


def test_auto_chooses_among_a_given_models_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored version: its own files are measured (TensorFlow in a child, told which
    file), its own accuracy decides, and its figures are cached in a file of its own."""
    speeds = {TF32: 110.0, BF16: 220.0, LITE32: 120.0, INT8: 400.0}
    files = _given_files(tmp_path, {**CARD, "tflite-int8": -0.02})  # int8 lost accuracy
    clock = FakeClock()
    loaded: list[tuple[str, Path | None]] = []
    told: list[tuple[str, Path | None]] = []

    def create(config: Any, variant: mv.Variant, path: Path | None) -> FakeRuntime:
        loaded.append((variant.key, path))
        runtime = FakeRuntime(clock, 1 / speeds[variant], name=variant.runtime)
        runtime.precision = variant.precision
        return runtime

    def child(config: Any, variants: list[mv.Variant], given: Any = None) -> list[mv.Measurement]:
        told.extend((v.key, given.path(v)) for v in variants)
        return [mv.Measurement(v, speeds[v]) for v in variants]

    monkeypatch.setattr(auto, "_create_variant", create)
    monkeypatch.setattr(auto, "measure_in_child", child)
    monkeypatch.setattr(auto, "machine", lambda: "x86_64")
    monkeypatch.setattr("facemask.model.runtime.tensorflow._PROCESS_STATE", {})
    monkeypatch.setenv(mv.CACHE_DIR_ENV, str(tmp_path / "cache"))
    config = auto.AutoConfig(batch_size=4)
    runtime: Any = auto.select_runtime(config, files, timer=clock, isolate_tensorflow=True)
    choice = runtime.selection
    assert choice.variant == BF16 and choice.rejected == {"tflite-int8": "AP50 -0.0200 beyond 0.01"}
    assert told == [("tensorflow-float32", files.source), ("tensorflow-bf16", files.source)]
    assert loaded == [
        ("tflite-float32", files.tflite["float32"]),
        ("tflite-int8", files.tflite["int8"]),
        ("tensorflow-bf16", files.source),  # the winner, created here after the children
    ]
    assert json.loads((tmp_path / "cache" / "variant-choice.v1.json").read_text())["model"] == "v1"
    assert not (tmp_path / "cache" / mv.CACHE_FILE).exists()  # the pinned model's is not touched


def test_auto_without_a_model_pb_or_known_accuracy_refuses(tmp_path: Path) -> None:
    files = _given_files(tmp_path, {}, source=False)
    with pytest.raises(mv.NoVariantError, match=r"no model\.pb"):
        auto.select_runtime(auto.AutoConfig(batch_size=4, cache=False), files)


def test_child_process_is_told_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = _given_files(tmp_path, CARD)
    argv: list[str] = []

    def run(args: list[str], **_: Any) -> Any:
        argv.extend(args)
        raise OSError("not run")

    monkeypatch.setattr(auto.subprocess, "run", run)
    assert auto.measure_in_child(auto.AutoConfig(batch_size=2), [BF16, INT8], files) == []
    assert argv[argv.index("--model") : argv.index("--model") + 4] == [
        "--model",
        f"tensorflow-bf16={files.source}",
        "--model",
        f"tflite-int8={files.tflite['int8']}",
    ]


def test_a_lone_tensorflow_candidate_is_taken_unmeasured(fake_variants: Any) -> None:
    """One candidate, to be measured in a child process: nothing to compare, so no child
    (seconds and ~1 GiB): taken when its accuracy is within the tolerance."""
    clock, created = fake_variants({TF32: 110.0})
    config = parse_runtime_config({"type": "auto", "batch_size": 4, "cache": False})
    runtime: Any = auto.select_runtime(config, timer=clock, isolate_tensorflow=True)  # type: ignore[arg-type]
    assert runtime.selection.variant == TF32 and runtime.selection.measurements == ()
    assert runtime.selection.images_per_second == 0.0
    assert created == ["tensorflow-float32"]  # created, never measured in a child


def test_a_lone_candidate_beyond_the_tolerance_is_refused(
    fake_variants: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, created = fake_variants({BF16: 200.0})
    monkeypatch.setattr(
        mv,
        "load_ap50_deltas",
        lambda sha, path=None, calibrations=None: {**CARD, "tensorflow-bf16": 0.02},
    )
    config = parse_runtime_config({"type": "auto", "batch_size": 4, "cache": False})
    with pytest.raises(mv.NoVariantError, match=r"tensorflow-bf16: AP50 \+0\.0200 beyond"):
        auto.select_runtime(config, timer=clock, isolate_tensorflow=True)  # type: ignore[arg-type]
    assert created == []
