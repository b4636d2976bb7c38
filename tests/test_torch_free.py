"""The test modules of the pieces that need no torch (JSON5, the Go template interpreter, parity, the statistics) run
and pass on a machine without it: here with torch hidden (`sys.modules["torch"] = None` is what an absent package looks
like to `import` and to `importlib.util.find_spec`, so transformers also takes its no-torch path)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
TORCH_FREE = [
    "openclaw/test_json5.py",
    "export/test_gotemplate.py",
    "export/test_parity.py",
    "evaluate/test_stats.py",
]
HIDE_TORCH = "import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def test_these_modules_pass_without_torch() -> None:
    paths = [str(TESTS / p) for p in TORCH_FREE]
    result = subprocess.run(
        [sys.executable, "-c", HIDE_TORCH, "-q", "-p", "no:cacheprovider", "-rs", *paths],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    summary = out.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), out[-4000:]  # nothing skipped, nothing deselected
