"""The test suite's own rule for absent shared data: skip locally, fail loudly in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.paths import require


@pytest.mark.parametrize(("ci", "outcome"), [("true", "fail"), ("", "skip")])
def test_absent_shared_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: str
) -> None:
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="not present"):
        require(tmp_path / "nowhere")
    assert require(tmp_path) == tmp_path
