"""The gateway fuzzed at length: schemathesis against `clawtune serve`'s own OpenAPI schema, a larger budget than the
test suite's (`tests/serve/test_serve_fuzz.py`), with hypothesis free to pick new inputs each run.

    python bench/serve_fuzz.py                    # 300 schema-valid and 300 schema-breaking cases per operation
    python bench/serve_fuzz.py --examples 1000

Prints the cases sent, the statuses answered, every check that failed (5xx, a status code, content type or body the
schema does not allow), whether the server is still healthy, and whether every answered chat completion is in the
request log with the status its client saw. Exits 1 on any finding.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.serve_fakes import AdapterEngine, config, fuzz

from clawtune.serve.app import Gateway, Server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=300, help="Cases per operation and mode (default 300).")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="serve-fuzz-"))
    (folder / "adapters").mkdir()
    key = "fuzz-key"
    settings = {"api_keys": [key], "admin_keys": [key], "adapter_dirs": [str(folder / "adapters")]}
    server = Server(Gateway(config(folder, server=settings), engine=AdapterEngine())).start()
    started = time.monotonic()
    try:
        report = fuzz(server.url, key, args.examples, models=["general", "finance-ab", "auto"], derandomize=False)
        elapsed = time.monotonic() - started
        health = httpx.get(server.url + "/health", timeout=30)
        server.gateway.log.flush()
        conn = sqlite3.connect(server.gateway.log.path)
        logged = dict(conn.execute("select id, status from requests").fetchall())
        conn.close()
    finally:
        server.close()
    missing = {i: s for i, s in report["chat"].items() if logged.get(i) != s}
    server_errors = sum(n for s, n in report["statuses"].items() if s >= 500)
    print(f"operations: {len(report['operations'])} ({', '.join(report['operations'])})")
    print(f"cases: {report['cases']} in {elapsed:.0f} s; statuses: {dict(sorted(report['statuses'].items()))}")
    chat_statuses: dict[int, int] = {}
    for status in report["chat"].values():
        chat_statuses[status] = chat_statuses.get(status, 0) + 1
    print(f"chat completions answered: {len(report['chat'])} {dict(sorted(chat_statuses.items()))}")
    print(f"5xx: {server_errors}; check failures: {len(report['failures'])}")
    for failure in report["failures"][:20]:
        print("  " + failure.replace("\n", "\n    "))
    print(f"health after the run: {health.status_code} {health.json().get('status')}")
    print(f"answered chat completions missing from the log or logged with another status: {len(missing)}")
    ok = not server_errors and not report["failures"] and health.status_code == 200 and not missing
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
