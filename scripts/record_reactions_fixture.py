"""Record the store of tests/loop/fixtures/openclaw-2026.9.6-reactions/ with the real OpenClaw, then add reactions.

Headless OpenClaw (`openclaw agent --local`) has no chat channel, so it records no reactions. The turns are recorded by
the real 2026.9.6 (answered by the integration tests' scripted fake model); then the reactions are added the two ways
a store can hold them:
- the second user turn is sent with the system-event line OpenClaw's Telegram channel puts before a user's next
  message when they react ("Telegram reaction added: 👎 by Alice (@alice) on msg 42", from OpenClaw's docs), so the
  transcript stores it as OpenClaw would;
- a `session_reactions` table is added to the copied store with one row (😡 on the third answer, by event seq). No
  release up to 2026.9.6 has this table: its columns here are the ones clawtune looks for by name.

    .venv/bin/python scripts/record_reactions_fixture.py      # about a minute
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.fake_openai import FakeOpenAI  # noqa: E402
from tests.integration.openclaw_cli import OpenClaw, install_openclaw  # noqa: E402

TARGET = ROOT / "tests" / "loop" / "fixtures" / "openclaw-2026.9.6-reactions"
REACTION_LINE = "System: [2026-12-02 10:00:05 UTC] Telegram reaction added: 👎 by Alice (@alice) on msg 42"
TURNS = [
    "What is the EUR/USD rate today?",
    f"{REACTION_LINE}\n\nAnd the GBP/USD rate?",
    "Thanks. And JPY?",
]


def main() -> None:
    binary = install_openclaw()
    with tempfile.TemporaryDirectory(prefix="clawtune-reactions-") as tmp:
        oc = OpenClaw(binary, Path(tmp) / "home")
        oc.run("setup", "--baseline")
        with FakeOpenAI() as fake:
            oc.use_model_server(fake.base_url)
            for message in TURNS:
                oc.turn(message)
        source = oc.state / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
        store = TARGET / "state" / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
        shutil.rmtree(TARGET / "state", ignore_errors=True)
        store.parent.mkdir(parents=True)
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(store)
        src.backup(dst)  # folds the WAL in
        src.close()
        answers = [
            seq
            for seq, event in dst.execute("select seq, event_json from transcript_events order by seq")
            if event and json.loads(event).get("message", {}).get("role") == "assistant"
        ]
        (session_id,) = dst.execute("select distinct session_id from transcript_events").fetchone()
        dst.execute(
            "create table session_reactions (session_id text not null, event_seq integer, emoji text not null, "
            "created_at integer, removed integer)"
        )
        dst.execute("insert into session_reactions values (?, ?, '😡', 0, 0)", (session_id, answers[-1]))
        dst.commit()
        dst.execute("pragma journal_mode=delete")
        dst.close()
    (TARGET / "expected.json").write_text(
        json.dumps({"turns": TURNS, "session_id": session_id, "reacted_answer_seqs": answers}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {store} ({store.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
