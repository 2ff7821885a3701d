"""The settings base every service shares: prefixes, shared variables, unknown variables,
clear errors, --check-config."""

from __future__ import annotations

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from facemask.infra.settings import ConfigError, ServiceSettings, check_config_and_exit


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FACEMASK_DEMO_", extra="forbid")

    port: int = Field(50051, ge=1, le=65535, description="a port")
    api_token: str = Field("", description="a secret")
    tiles: dict[str, str] = Field(default_factory=dict, description="JSON")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FACEMASK_"):
            monkeypatch.delenv(key)


def test_defaults_and_layout() -> None:
    settings = DemoSettings.load()
    assert settings.port == 50051
    assert (settings.layout.prefix, settings.layout.partitions) == ("facemask", 4)
    assert DemoSettings.env_prefix() == "FACEMASK_DEMO_"


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"FACEMASK_DEMO_PORT": "7000"}, "port", 7000),
        ({"FACEMASK_REDIS_URL": "redis://r:1/0"}, "redis_url", "redis://r:1/0"),
        # the service-specific variable wins over the shared one
        (
            {"FACEMASK_REDIS_URL": "redis://a:1/0", "FACEMASK_DEMO_REDIS_URL": "redis://b:1/0"},
            "redis_url",
            "redis://b:1/0",
        ),
        ({"FACEMASK_STREAM_PARTITIONS": "8"}, "stream_partitions", 8),
        ({"FACEMASK_DEMO_TILES": '{"lobby": "2x2"}'}, "tiles", {"lobby": "2x2"}),
    ],
)
def test_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, value: object
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    assert getattr(DemoSettings.load(), field) == value


def test_shared_only_fields_are_not_read_without_the_service_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `port` is not a shared setting: FACEMASK_PORT is never read, and reported as a typo
    monkeypatch.setenv("FACEMASK_PORT", "1")
    with pytest.raises(ConfigError, match=r"FACEMASK_PORT \(did you mean FACEMASK_DEMO_PORT\?\)"):
        DemoSettings.load()
    assert DemoSettings(port=7).port == 7  # (the class itself never reads it)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("FACEMASK_REDIS_ULR", "FACEMASK_REDIS_URL"),
        ("FACEMASK_LOG_LEVLE", "FACEMASK_LOG_LEVEL"),
        ("FACEMASK_STREAM_PARTITONS", "FACEMASK_STREAM_PARTITIONS"),
        ("FACEMASK_DEMOS_PORT", "FACEMASK_DEMO_PORT"),
        ("FACEMASK_INFERNCE_PORT", "FACEMASK_INFERENCE_PORT"),
        ("FACEMASK_ALERT_PORT", "FACEMASK_ALERTS_PORT"),
        ("facemask_redis_ulr", "FACEMASK_REDIS_URL"),
    ],
)
def test_a_typo_under_the_shared_prefix_fails_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, name: str, suggestion: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError) as caught:
        DemoSettings.load()
    assert f"{name} (did you mean {suggestion}?)" in str(caught.value)
    assert DemoSettings.stray_env({name: "1"}) == {name: suggestion}


@pytest.mark.parametrize(
    "name",
    [
        "FACEMASK_INFERENCE_TILES",  # another service's settings share the environment
        "FACEMASK_ALERTS_RULE_K",
        "FACEMASK_INGEST_CAMERAS",
        "FACEMASK_INFERENCE_ANYTHING",  # another service's business: it checks its own
        "FACEMASK_REDIS_URL",  # shared
        "FACEMASK_MODEL_MIRROR",  # read by the model store, not a setting
        "FACEMASK_SKIP_APT",
        "OTHER_REDIS_ULR",  # not ours
    ],
)
def test_variables_of_other_services_and_tools_are_no_typo(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "redis://h:1/0" if name == "FACEMASK_REDIS_URL" else "1")
    DemoSettings.load()
    assert DemoSettings.stray_env({name: "1"}) == {}


def test_an_unknown_variable_far_from_any_setting_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FACEMASK_BUILD_COLOUR", "blue")
    with caplog.at_level("WARNING", logger="facemask.infra.settings"):
        DemoSettings.load()
    assert [r.variable for r in caplog.records] == ["FACEMASK_BUILD_COLOUR"]  # type: ignore[attr-defined]


def test_an_unknown_variable_with_the_own_prefix_gets_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FACEMASK_DEMO_TILSE", "{}")
    with pytest.raises(
        ConfigError, match=r"FACEMASK_DEMO_TILSE \(did you mean FACEMASK_DEMO_TILES\?\)"
    ):
        DemoSettings.load()


@pytest.mark.parametrize("value", ["2x2", "lobby=2x2", "{'lobby': '2x2'}", "[1, 2]", '"2x2"', "1"])
def test_a_json_setting_says_json_is_expected_with_an_example(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FACEMASK_DEMO_TILES", value)
    with pytest.raises(ConfigError) as caught:
        DemoSettings.load()
    message = str(caught.value)
    assert "FACEMASK_DEMO_TILES" in message and "expected JSON, e.g. FACEMASK_DEMO_TILES='{" in (
        message.replace("JSON (setting 'tiles' could not be parsed), e.g.", "JSON, e.g.")
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACEMASK_DEMO_PROT": "1"}, "unknown setting(s) FACEMASK_DEMO_PROT"),
        ({"FACEMASK_DEMO_PORT": "0"}, "FACEMASK_DEMO_PORT"),
        ({"FACEMASK_DEMO_PORT": "http"}, "FACEMASK_DEMO_PORT"),
        ({"FACEMASK_LOG_LEVEL": "verbose"}, "FACEMASK_DEMO_LOG_LEVEL"),
        ({"FACEMASK_DEMO_TILES": "2x2"}, "invalid configuration"),
    ],
)
def test_errors_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    with pytest.raises(ConfigError) as caught:
        DemoSettings.load()
    assert message in str(caught.value)


def test_describe_masks_secrets() -> None:
    settings = DemoSettings.load(api_token="s3cret", redis_url="redis://:pw@host:6379/0")
    text = settings.describe()
    assert "s3cret" not in text and "pw" not in text
    assert "FACEMASK_DEMO_API_TOKEN=***" in text
    assert "FACEMASK_DEMO_REDIS_URL=redis://***@host:6379/0" in text


def test_check_config_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ok:
        check_config_and_exit(DemoSettings)
    assert ok.value.code == 0 and "configuration OK" in capsys.readouterr().out
    monkeypatch.setenv("FACEMASK_DEMO_PORT", "-3")
    with pytest.raises(SystemExit) as bad:
        check_config_and_exit(DemoSettings)
    assert bad.value.code == 2
    assert "configuration error: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("rediss://:secret@redis.example:6380/1", True),
        ("unix:///run/redis.sock", True),
        ("redis+cluster://10.0.0.1:7000", True),
        ("http://x", False),
        ("127.0.0.1:6379", False),
        ("redis://", False),
    ],
)
def test_redis_url_is_checked_before_any_work(
    monkeypatch: pytest.MonkeyPatch, url: str, ok: bool
) -> None:
    monkeypatch.setenv("FACEMASK_REDIS_URL", url)
    if ok:
        assert DemoSettings.load().redis_url == url
        return
    with pytest.raises(ConfigError, match="FACEMASK_DEMO_REDIS_URL"):
        DemoSettings.load()


# -- the real commands: `facemask <service> --check-config` fails before any work ----------

COMMANDS = {
    "serve-inference": [],
    "serve-alerts": [],
    "ingest": ["--camera", "id=lobby,source=0"],
}


def check_config(
    command: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """``facemask <command> --check-config`` in-process: (exit code, stderr)."""
    from facemask.cli import main

    args = [] if "FACEMASK_INGEST_CAMERAS" in env else COMMANDS[command]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(SystemExit) as exited:
            main([command, "--check-config", *args])
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        # all services share one environment: the others' settings are no typo
        (
            {
                "FACEMASK_INFERENCE_TILES": '{"lobby": "2x2"}',
                "FACEMASK_ALERTS_RULE_K": "3",
                "FACEMASK_INGEST_STREAM_MAXLEN": "500",
                "FACEMASK_REDIS_URL": "redis://redis:6379/0",
                "FACEMASK_MODEL_MIRROR": "/mirror",
            },
            None,
        ),
        (
            {"FACEMASK_REDIS_ULR": "redis://x"},
            "FACEMASK_REDIS_ULR (did you mean FACEMASK_REDIS_URL?)",
        ),
        ({"FACEMASK_LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"FACEMASK_REDIS_URL": "http://x"}, "is not a Redis URL"),
        ({"FACEMASK_STREAM_PARTITIONS": "0"}, "STREAM_PARTITIONS"),
        ({"FACEMASK_INFERNCE_PORT": "1"}, "did you mean FACEMASK_INFERENCE_PORT?"),
    ],
)
def test_check_config_of_every_service(
    capsys: pytest.CaptureFixture[str], command: str, env: dict[str, str], expected: str | None
) -> None:
    code, err = check_config(command, env, capsys)
    if expected is None:
        assert code == 0, err
    else:
        assert code == 2 and expected in err and "error" in err


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (
            "serve-inference",
            {"FACEMASK_INFERENCE_TILES": "lobby=2x2"},
            "FACEMASK_INFERENCE_TILES: expected JSON (setting 'tiles' could not be parsed), "
            """e.g. FACEMASK_INFERENCE_TILES='{"lobby": "2x2", "*": "off"}'""",
        ),
        (
            "serve-inference",
            {"FACEMASK_INFERENCE_TILES": '["2x2"]'},
            "Input should be a valid dictionary (expected JSON, e.g. FACEMASK_INFERENCE_TILES=",
        ),
        ("serve-inference", {"FACEMASK_INFERENCE_TILES": '{"a/b": "2x2"}'}, "tiles: camera id"),
        ("serve-inference", {"FACEMASK_INFERENCE_MAX_CLOCK_SKEW": "-1"}, "MAX_CLOCK_SKEW"),
        ("serve-inference", {"FACEMASK_INFERENCE_MAX_CAMERAS": "0"}, "MAX_CAMERAS"),
        (
            "serve-inference",
            {"FACEMASK_INFERENCE_TILSE": "{}"},
            "did you mean FACEMASK_INFERENCE_TILES?",
        ),
        (
            "serve-alerts",
            {"FACEMASK_ALERTS_RULES": "lobby:k=3"},
            "FACEMASK_ALERTS_RULES: expected JSON",
        ),
        ("serve-alerts", {"FACEMASK_ALERTS_RULES": '{"bad id": {"k": 1}}'}, "rules: camera id"),
        ("serve-alerts", {"FACEMASK_ALERTS_MAX_CLOCK_SKEW": "abc"}, "MAX_CLOCK_SKEW"),
        (
            "ingest",
            {"FACEMASK_INGEST_CAMERAS": "id=lobby"},
            "FACEMASK_INGEST_CAMERAS: expected JSON",
        ),
    ],
)
def test_check_config_names_the_setting_and_the_fix(
    capsys: pytest.CaptureFixture[str], command: str, env: dict[str, str], expected: str
) -> None:
    code, err = check_config(command, env, capsys)
    assert code == 2 and expected in err, err
