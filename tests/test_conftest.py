"""The suite's own rules (tests/conftest.py): a tool CI installs is never silently skipped under CI."""

from __future__ import annotations

import pytest

from .conftest import missing


def test_a_missing_tool_skips_here_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no Chromium.*CI=true"):
        missing("no Chromium on this machine")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        missing("no Chromium on this machine")
