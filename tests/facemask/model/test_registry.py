"""The local model store: content-addressed ids, cards, resolution of what users type,
verified transfer of a version as bytes, and clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from facemask.model import registry as reg
from facemask.model import store as modelstore
from facemask.model.registry import ModelRegistry, ModelVersion, RegistryError
from tests.fixtures.registry import CREATED, small_card


def _files(tmp_path: Path, tag: bytes, *, int8: bool = True) -> dict[str, Path]:
    """Stand-in model files (the store never parses them)."""
    out = {}
    for variant, data in (("tf", b"graph"), ("float32", b"f32"), ("int8", b"i8")):
        if variant == "int8" and not int8:
            continue
        path = tmp_path / f"{tag.decode()}-{variant}.bin"
        path.write_bytes(data + b":" + tag)
        out[variant] = path
    return out


def test_add_is_content_addressed_with_a_complete_card(
    tmp_path: Path, model_registry: ModelRegistry
) -> None:
    files = _files(tmp_path, b"a")
    version = model_registry.add(files, small_card())
    expected = hashlib.sha256(files["tf"].read_bytes()).hexdigest()[:16]
    assert version.version == expected
    assert version.path == model_registry.root / expected
    card = json.loads((version.path / "card.json").read_text())
    assert card["version"] == expected
    assert card["created"] == "2026-01-02T03:04:05+00:00"
    assert card["parent"] == "upstream" and card["datasets"][0]["images"] == 446
    assert card["files"] == {
        "model.pb": modelstore.sha256_file(files["tf"]),
        "model.float32.tflite": modelstore.sha256_file(files["float32"]),
        "model.int8.tflite": modelstore.sha256_file(files["int8"]),
    }
    assert version.file("int8").read_bytes() == files["int8"].read_bytes()
    assert version.variants == ["tf", "float32", "int8"]
    assert version.input_size == 260
    assert version.parent == "upstream"
    assert not [p for p in model_registry.root.iterdir() if p.name.startswith(".")]


def test_the_upstream_files_get_the_id_of_their_graph(
    upstream_copy: ModelVersion, upstream_model_files: dict[str, Path]
) -> None:
    pb = upstream_model_files["tf"]
    assert upstream_copy.version == modelstore.sha256_file(pb)[:16]
    upstream_copy.verify()


def test_adding_the_same_model_again_returns_the_stored_version(
    tmp_path: Path, model_registry: ModelRegistry
) -> None:
    files = _files(tmp_path, b"a")
    first = model_registry.add(files, small_card())
    later = ModelRegistry(model_registry.root, clock=lambda: CREATED.replace(year=2030))
    again = later.add(files, small_card(recipe={"other": True}))
    assert again.version == first.version and again.card == first.card


def test_file_names_are_accepted_as_keys_and_missing_variants_are_clear_errors(
    tmp_path: Path, model_registry: ModelRegistry
) -> None:
    files = _files(tmp_path, b"b", int8=False)
    version = model_registry.add(
        {"model.pb": files["tf"], "model.float32.tflite": files["float32"]}, small_card()
    )
    assert version.variants == ["tf", "float32"]
    with pytest.raises(RegistryError, match="has no int8 file"):
        version.file("int8")
    with pytest.raises(RegistryError, match="unknown model variant 'fp16'"):
        version.file("fp16")


@pytest.mark.parametrize(
    ("runtime", "asked", "int8_only", "expected"),
    [
        ("tensorflow", None, False, "tf"),
        ("tflite", None, False, "float32"),
        ("tflite", "int8", False, "int8"),
        ("tflite", None, True, "int8"),  # a lone int8 file is what tflite loads
        ("tflite", "float32", True, "has no float32 file"),
        ("auto", None, False, "cannot load model"),
    ],
)
def test_the_file_each_runtime_loads(
    tmp_path: Path,
    model_registry: ModelRegistry,
    runtime: str,
    asked: str | None,
    int8_only: bool,
    expected: str,
) -> None:
    files = _files(tmp_path, b"r")
    if int8_only:  # a version holding only its int8 file, as `get(path)` of one gives
        version = model_registry.add(files, small_card())
        version = model_registry.get(str(version.file("int8")))
        assert version.variants == ["int8"]
    else:
        version = model_registry.add(files, small_card())
    if expected in ("tf", "float32", "int8"):
        path, variant = version.runtime_file(runtime, asked)
        assert variant == expected and path == version.file(expected)
    else:
        with pytest.raises(RegistryError, match=expected):
            version.runtime_file(runtime, asked)


@pytest.mark.parametrize(
    ("files_of", "card", "message"),
    [
        (lambda f: {"float32": f["float32"]}, small_card(), "needs its model.pb"),
        (lambda f: {**f, "weights.h5": f["tf"]}, small_card(), "unknown model file 'weights.h5'"),
        (lambda f: {"tf": f["tf"].with_name("absent")}, small_card(), "does not exist"),
        (lambda f: f, {"parent": "upstream"}, "needs input_size"),
        (lambda f: f, small_card(parent="../x"), "not 'upstream' or a version id"),
        (lambda f: f, small_card(recipe={"when": object()}), "not JSON-serialisable"),
    ],
)
def test_bad_additions_are_refused(
    tmp_path: Path, model_registry: ModelRegistry, files_of, card, message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        model_registry.add(files_of(_files(tmp_path, b"c")), card)
    assert model_registry.list() == []


def test_get_resolves_ids_prefixes_upstream_and_paths(
    tmp_path: Path, model_registry: ModelRegistry
) -> None:
    version = model_registry.add(_files(tmp_path, b"d"), small_card())
    vid = version.version
    assert model_registry.get(vid).version == vid
    assert model_registry.get(vid[:6]).version == vid
    assert model_registry.get(f"  {vid[:8]} ").version == vid
    assert model_registry.get("upstream").version == "upstream"
    assert model_registry.get(str(version.path)).version == vid
    one_file = model_registry.get(version.path / "model.int8.tflite")
    assert (one_file.version, one_file.variants, one_file.card) == (vid, ["int8"], version.card)
    loose_pb = tmp_path / "exported.pb"
    loose_pb.write_bytes(b"loose graph")
    loose = model_registry.get(str(loose_pb))
    assert loose.version == hashlib.sha256(b"loose graph").hexdigest()[:16]
    assert loose.file("tf") == loose_pb
    with pytest.raises(RegistryError, match="has no float32 file"):
        loose.file("float32")
    loose_int8 = tmp_path / "x.int8.tflite"
    loose_int8.write_bytes(b"q")
    assert model_registry.get(str(loose_int8)).variants == ["int8"]


@pytest.mark.parametrize("ref", ["abcde", "0123456789abcdef", "nope", "missing.pb", "dir/"])
def test_unknown_references_are_clear_errors(
    tmp_path: Path, model_registry: ModelRegistry, ref: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model_registry.add(_files(tmp_path, b"e"), small_card())
    with pytest.raises(RegistryError, match=r"unknown model version|does not exist"):
        model_registry.get(ref)


def test_an_ambiguous_prefix_names_the_candidates(model_registry: ModelRegistry) -> None:
    for vid in ("abcdef0000000001", "abcdef0000000002"):
        (model_registry.root / vid).mkdir(parents=True)
        (model_registry.root / vid / "card.json").write_text(json.dumps({"version": vid}))
    with pytest.raises(RegistryError, match="ambiguous: abcdef0000000001, abcdef0000000002"):
        model_registry.get("abcdef")
    assert model_registry.get("abcdef0000000002").version == "abcdef0000000002"


def test_a_directory_whose_card_names_another_version_is_refused(
    model_registry: ModelRegistry,
) -> None:
    vid = "abcdef0000000001"
    (model_registry.root / vid).mkdir(parents=True)
    (model_registry.root / vid / "card.json").write_text(json.dumps({"version": "f" * 16}))
    with pytest.raises(RegistryError, match="names version"):
        model_registry.get(vid)


def test_list_is_newest_first_and_can_include_upstream(
    tmp_path: Path, model_registry: ModelRegistry
) -> None:
    older = model_registry.add(_files(tmp_path, b"f"), small_card())
    newer = ModelRegistry(model_registry.root, clock=lambda: CREATED.replace(year=2027)).add(
        _files(tmp_path, b"g"), small_card()
    )
    assert [v.version for v in model_registry.list()] == [newer.version, older.version]
    listed = model_registry.list(include_upstream=True)
    assert [v.version for v in listed] == ["upstream", newer.version, older.version]
    assert ModelRegistry(tmp_path / "never-created").list() == []


def test_verify_finds_a_changed_file(tmp_path: Path, model_registry: ModelRegistry) -> None:
    version = model_registry.add(_files(tmp_path, b"h"), small_card())
    version.verify()
    version.file("float32").write_bytes(b"changed")
    with pytest.raises(RegistryError, match=r"model\.float32\.tflite has sha256 .* corrupt"):
        version.verify()


def test_a_version_travels_as_bytes_into_another_registry(
    tmp_path: Path, model_registry: ModelRegistry
) -> None:
    version = model_registry.add(_files(tmp_path, b"i"), small_card())
    blobs = model_registry.blobs(version.version)
    assert set(blobs) == {"card.json", "model.pb", "model.float32.tflite", "model.int8.tflite"}
    other = ModelRegistry(tmp_path / "other")
    copy = other.add_bytes(blobs, expect=version.version)
    assert copy.version == version.version and copy.card == version.card
    assert (copy.path / "card.json").read_bytes() == blobs["card.json"]
    copy.verify()


def _blobs(tmp_path: Path, model_registry: ModelRegistry) -> dict[str, bytes]:
    version = model_registry.add(_files(tmp_path, b"j"), small_card())
    return model_registry.blobs(version.version)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: {**b, "model.int8.tflite": b"tampered"}, "refused \\(corrupt or tampered\\)"),
        (lambda b: {**b, "../../evil": b"x"}, "unexpected files"),
        (lambda b: {k: v for k, v in b.items() if k != "card.json"}, "no card.json"),
        (lambda b: {k: v for k, v in b.items() if k != "model.pb"}, "no model.pb"),
        (lambda b: {**b, "model.pb": b"other graph"}, "not that version"),
        (lambda b: {**b, "card.json": b"{"}, "not JSON"),
        (lambda b: {k: v for k, v in b.items() if k != "model.int8.tflite"}, "card.json lists"),
    ],
)
def test_received_bytes_that_do_not_match_the_card_are_refused(
    tmp_path: Path, model_registry: ModelRegistry, change, message: str
) -> None:
    blobs = _blobs(tmp_path, model_registry)
    expect = json.loads(blobs["card.json"])["version"]
    other = ModelRegistry(tmp_path / "other")
    with pytest.raises(RegistryError, match=message):
        other.add_bytes(change(blobs), expect=expect)
    assert other.list() == []
    assert not (tmp_path / "other").exists() or not list((tmp_path / "other").iterdir())


@pytest.mark.parametrize(
    "text", ["../../etc", "ABCDEF0123456789", "abcdef012345678", "abcdef0123456789/..", "", " "]
)
def test_hostile_version_strings_are_refused(text: str) -> None:
    with pytest.raises(RegistryError, match="is not a model version"):
        reg.check_version_id(text)


def test_upstream_is_the_cached_artifacts_with_a_card_from_the_manifest(
    model_registry: ModelRegistry,
) -> None:
    upstream = model_registry.upstream()
    assert upstream.version == "upstream" and upstream.input_size == 260
    pinned = modelstore.find_artifact("face_mask_detection.pb")
    assert upstream.card["files"] == {"face_mask_detection.pb": pinned.sha256}
    assert upstream.card["source"]["repository"] == "AIZOOTech/FaceMaskDetection"
    assert upstream.paths["tf"] == modelstore.cache_dir() / "face_mask_detection.pb"
    with pytest.raises(RegistryError, match="not a stored version"):
        model_registry.blobs("upstream")


def test_the_store_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(reg.STORE_ENV, str(tmp_path / "elsewhere"))
    assert ModelRegistry().root == tmp_path / "elsewhere"
    monkeypatch.delenv(reg.STORE_ENV)
    monkeypatch.setenv(modelstore.CACHE_ENV, str(tmp_path / "cache"))
    assert ModelRegistry().root == tmp_path / "cache" / "store"
