"""The suite's own rules (tests/conftest.py): a tool CI installs is never silently skipped under CI; a test that
needs the trained LoRA run is slow (left out of `make test-fast`)."""

from __future__ import annotations

import pytest

from .conftest import missing, pytest_collection_modifyitems


def test_a_missing_tool_skips_here_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no Chromium.*CI=true"):
        missing("no Chromium on this machine")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        missing("no Chromium on this machine")


def test_a_test_needing_the_trained_run_is_marked_slow() -> None:
    class Item:
        def __init__(self, fixtures: tuple[str, ...]) -> None:
            self.fixturenames = fixtures
            self.marks: list[str] = []

        def add_marker(self, mark: pytest.MarkDecorator) -> None:
            self.marks.append(mark.name)

    through_a_fixture, plain = Item(("tmp_path", "checkpoint", "tiny_lora")), Item(("tmp_path", "sample_data"))
    pytest_collection_modifyitems([through_a_fixture, plain])  # type: ignore[list-item]
    assert through_a_fixture.marks == ["slow"] and plain.marks == []
