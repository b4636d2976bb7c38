"""Generate, deterministically, an OpenClaw state folder for the sample agent `my-agent`.

A finance/data agent with four tools. A few hundred sessions from January to July 2026, most of them inside the
seed's date range 2026-04-01:2026-05-20: plain answers, tool calls, multi-turn follow-ups, refusals (English and
Chinese), edge cases, failed tool calls, aborted turns, rewinds (branches), a compaction, thinking blocks, images, and
secrets/PII planted in messages and tool results. Sessions before 2026-04-15 are stored the old way (JSONL files v1-v3,
trajectory siblings, a sessions.json index, a few cold .jsonl.zst archives); later ones in the SQLite store of current
releases (v4 events, zstd rows for events of 1024 bytes or more). Answers are functions of the question and the tool
results, so a small model can learn them.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

AGENT_ID = "my-agent"
STORE_SWITCH = datetime(2026, 4, 15, tzinfo=UTC)
IN_RANGE = (datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 20, 23, 0, tzinfo=UTC))
OUT_RANGES = [
    (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC)),
    (datetime(2026, 5, 22, tzinfo=UTC), datetime(2026, 7, 31, tzinfo=UTC)),
]

TOOLS: list[dict[str, Any]] = [
    {
        "name": "query_database",
        "description": "Run a read-only SQL query against a finance database and return rows as JSON.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "SQL SELECT statement."},
                "database": {"type": "string", "enum": ["prod_sales", "finance_dw"]},
            },
            "required": ["query", "database"],
        },
    },
    {
        "name": "get_exchange_rate",
        "description": "Get the exchange rate between two currencies on a date.",
        "parameters": {
            "type": "object",
            "properties": {
                "base": {"type": "string"},
                "quote": {"type": "string"},
                "date": {"type": "string", "description": "YYYY-MM-DD"},
            },
            "required": ["base", "quote"],
        },
    },
    {
        "name": "create_chart",
        "description": "Render a chart from a saved query result.",
        "parameters": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["bar", "line", "pie"]},
                "title": {"type": "string"},
                "data_ref": {"type": "string"},
            },
            "required": ["kind", "title", "data_ref"],
        },
    },
    {
        "name": "send_report",
        "description": "Email a short report.",
        "parameters": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to", "subject", "body"],
        },
    },
]
GENERIC_PROMPT = (
    "You are a personal assistant running inside OpenClaw. Follow the workspace instructions in AGENTS.md, SOUL.md "
    "and USER.md. Use tools when they help; prefer reading files before editing them; keep the user informed. "
) * 60  # the real one is about 48,000 characters of generic instructions; this stands in for it

REGIONS = ["North", "South", "East", "West", "Central"]
MONTHS = ["January", "February", "March", "April", "May", "June"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CNY"]
PLAIN_QA = [
    (
        "What does EBITDA mean?",
        "EBITDA is earnings before interest, taxes, depreciation and amortization: operating profit before non-cash and financing costs.",
    ),
    (
        "What is gross margin?",
        "Gross margin is revenue minus cost of goods sold, divided by revenue, shown as a percentage.",
    ),
    (
        "What is the difference between revenue and profit?",
        "Revenue is all money earned from sales; profit is what remains after subtracting costs and expenses.",
    ),
    (
        "What does YoY mean?",
        "YoY means year over year: a comparison of a figure with the same period one year earlier.",
    ),
    ("什么是毛利率?", "毛利率 = (营业收入 - 营业成本) / 营业收入,表示每一元收入中的毛利部分。"),
]
REFUSALS_EN = [
    "Book me a flight to Paris next week.",
    "Write a poem about the ocean.",
    "What medicine should I take for a headache?",
    "Can you order a pizza for the office?",
    "Hack into my competitor's database.",
]
REFUSALS_ZH = ["帮我订一张去上海的机票。", "给我写一首关于春天的诗。", "推荐一部好看的电影。"]
REFUSAL_EN = "Sorry, I can't help with that. I'm a finance data agent: I can query sales data, convert currencies, chart results and email reports."
REFUSAL_ZH = "抱歉,这超出了我的能力范围。我是财务数据Agent,可以查询销售数据、换算汇率、生成图表和发送报告。"
CONTACTS = ["alice.chen@example.com", "bob.smith@example.org", "finance-team@example.net", "li.wei@example.cn"]
PHONES = ["+1 415-555-0134", "(212) 555-0187", "13812345678", "+44 20 7946 0958"]
SECRETS = [
    "sk-proj-Zx8Qw2Er4Ty6Ui8Op0As2Df4Gh6Jk8Lz",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "xoxb-2048-123456789012-abcdefghijklmnop",
]
CARDS = ["4111 1111 1111 1111", "5500 0000 0000 0004"]


def sales_figure(region: str, month: str) -> int:
    """A deterministic sales total, so the same question always has the same answer."""
    digest = hashlib.sha256(f"{region}:{month}".encode()).digest()
    return 100_000 + int.from_bytes(digest[:4], "big") % 900_000


def fx_rate(base: str, quote: str) -> float:
    digest = hashlib.sha256(f"{base}{quote}".encode()).digest()
    return round(0.5 + (int.from_bytes(digest[:2], "big") % 1500) / 1000, 4)


@dataclass
class SessionBuilder:
    """Builds one session's entries as a tree, the way OpenClaw appends them."""

    rng: random.Random
    start: datetime
    version: int
    session_id: str
    channel: str
    session_key: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    leaf: str | None = None
    clock: datetime = field(init=False)
    calls: int = 0

    def __post_init__(self) -> None:
        self.clock = self.start

    def _id(self) -> str:
        if self.version >= 4:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return f"{self.rng.getrandbits(32):08x}"

    def _tick(self, seconds: float) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def add(self, entry: dict[str, Any], seconds: float = 2.0) -> str:
        when = self._tick(seconds)
        if self.version == 1:
            entry = {**entry, "timestamp": when.isoformat().replace("+00:00", "Z")}
            self.entries.append(entry)
            return ""
        entry_id = self._id()
        entry = {
            "type": entry.pop("type"),
            "id": entry_id,
            "parentId": self.leaf,
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            **entry,
        }
        self.entries.append(entry)
        self.leaf = entry_id
        return entry_id

    def rewind(self, to: str | None) -> None:
        """The user rewinds to entry `to`: OpenClaw records a "rewind" label there and the branch grows from it."""
        self.leaf = to
        self.entries.append(
            {
                "type": "label",
                "id": self._id(),
                "parentId": to,
                "timestamp": self.clock.isoformat().replace("+00:00", "Z"),
                "targetId": to,
                "label": "rewind",
            }
        )
        self.leaf = self.entries[-1]["id"]

    def compact(self, summary: str, first_kept: str | None, tokens_before: int) -> str:
        """OpenClaw's compaction: what came before `first_kept` is replaced by `summary` in the model's context."""
        return self.add(
            {"type": "compaction", "summary": summary, "firstKeptEntryId": first_kept, "tokensBefore": tokens_before}
        )

    def ms(self) -> int:
        return int(self.clock.timestamp() * 1000)

    def user(self, content: Any) -> str:
        self._tick(self.rng.uniform(5, 90))
        return self.add({"type": "message", "message": {"role": "user", "content": content, "timestamp": self.ms()}})

    def assistant(
        self,
        text: str | None = None,
        calls: list[tuple[str, dict[str, Any]]] | None = None,
        stop: str | None = None,
        thinking: str | None = None,
        error: str | None = None,
    ) -> list[str]:
        blocks: list[dict[str, Any]] = []
        if thinking:
            blocks.append({"type": "thinking", "thinking": thinking})
        if text:
            blocks.append({"type": "text", "text": text})
        ids = []
        for name, args in calls or []:
            self.calls += 1
            call_id = f"call_{self.session_id[:6]}{self.calls:03d}"
            ids.append(call_id)
            blocks.append({"type": "toolCall", "id": call_id, "name": name, "arguments": args})
        message: dict[str, Any] = {
            "role": "assistant",
            "content": blocks,
            "api": "openai-completions",
            "provider": "openai",
            "model": "gpt-5.1",
            "usage": {
                "input": 48_000 + self.rng.randint(0, 900),
                "output": self.rng.randint(20, 200),
                "cacheRead": 0,
                "cacheWrite": 0,
            },
            "stopReason": stop or ("toolUse" if calls else "stop"),
            "timestamp": self.ms(),
        }
        if error:
            message["errorMessage"] = error
        self.add({"type": "message", "message": message}, seconds=self.rng.uniform(1, 6))
        return ids

    def tool_result(
        self, call_id: str, name: str, text: str, is_error: bool = False, exit_code: int | None = None
    ) -> str:
        message: dict[str, Any] = {
            "role": "toolResult",
            "toolCallId": call_id,
            "toolName": name,
            "content": [{"type": "text", "text": text}],
            "isError": is_error,
            "timestamp": self.ms(),
        }
        if exit_code is not None:
            message["details"] = {"exitCode": exit_code}
        return self.add({"type": "message", "message": message}, seconds=self.rng.uniform(0.2, 3))


# --- conversation scripts ---------------------------------------------------------------------------------------


def _sales_turn(b: SessionBuilder, region: str, month: str, zh: bool = False, plant: str | None = None) -> None:
    total = sales_figure(region, month)
    question = (
        f"{month}{region}区域的销售额是多少?" if zh else f"What were total sales in the {region} region for {month}?"
    )
    if plant:
        question += f" {plant}"
    b.user(question)
    query = f"SELECT SUM(amount) FROM sales WHERE region = '{region}' AND month = '{month}'"
    thinking = f"The user wants {month} sales for {region}; query prod_sales." if b.rng.random() < 0.15 else None
    (cid,) = b.assistant(
        None if not zh else "让我查一下数据库。",
        [("query_database", {"query": query, "database": "prod_sales"})],
        thinking=thinking,
    )
    b.tool_result(cid, "query_database", json.dumps({"rows": [{"sum": total}]}))
    b.assistant(
        f"{month}{region}区域的总销售额为${total:,}。"
        if zh
        else f"Total sales in the {region} region for {month} were ${total:,}."
    )


def _fx_turn(b: SessionBuilder) -> None:
    base, quote = b.rng.sample(CURRENCIES, 2)
    amount = b.rng.choice([100, 250, 1000, 5000, 12000])
    rate = fx_rate(base, quote)
    b.user(f"Convert {amount} {base} to {quote}.")
    (cid,) = b.assistant(None, [("get_exchange_rate", {"base": base, "quote": quote})])
    b.tool_result(cid, "get_exchange_rate", json.dumps({"base": base, "quote": quote, "rate": rate}))
    b.assistant(f"At a rate of {rate}, {amount} {base} is {amount * rate:,.2f} {quote}.")


def _chart_turn(b: SessionBuilder, region: str) -> None:
    b.user(f"Make a bar chart of monthly sales for the {region} region.")
    ref = f"q_{region.lower()}_monthly"
    (cid,) = b.assistant(None, [("create_chart", {"kind": "bar", "title": f"{region} monthly sales", "data_ref": ref})])
    b.tool_result(cid, "create_chart", json.dumps({"chart_url": f"https://charts.example.com/{ref}.png"}))
    b.assistant(f"Here is the bar chart of monthly sales for the {region} region: https://charts.example.com/{ref}.png")


def _report_turn(b: SessionBuilder, region: str, month: str) -> None:
    to = b.rng.choice(CONTACTS)
    total = sales_figure(region, month)
    b.user(f"Email the {month} {region} sales total to {to}.")
    body = f"{month} sales for {region}: ${total:,}."
    (cid,) = b.assistant(None, [("send_report", {"to": to, "subject": f"{month} {region} sales", "body": body})])
    b.tool_result(cid, "send_report", json.dumps({"status": "sent", "to": to}))
    b.assistant(f"Sent the {month} {region} sales total (${total:,}) to {to}.")


def _answer_sales(b: SessionBuilder, region: str, period: str) -> None:
    """The query_database call for a region's total, its result, and the answer."""
    total = sales_figure(region, period)
    query = f"SELECT SUM(amount) FROM sales WHERE region = '{region}' AND month = '{period}'"
    (cid,) = b.assistant(None, [("query_database", {"query": query, "database": "prod_sales"})])
    b.tool_result(cid, "query_database", json.dumps({"rows": [{"sum": total}]}))
    b.assistant(f"Total sales in the {region} region for {period} were ${total:,}.")


def _sales(b: SessionBuilder, region: str, month: str) -> None:
    _sales_turn(b, region, month, zh=b.rng.random() < 0.15)


def _fx(b: SessionBuilder, region: str, month: str) -> None:
    _fx_turn(b)


def _chart(b: SessionBuilder, region: str, month: str) -> None:
    _chart_turn(b, region)


def _plain(b: SessionBuilder, region: str, month: str) -> None:
    question, answer = b.rng.choice(PLAIN_QA)
    b.user(question)
    b.assistant(answer)


def _refusal(b: SessionBuilder, region: str, month: str) -> None:
    if b.rng.random() < 0.35:
        b.user(b.rng.choice(REFUSALS_ZH))
        b.assistant(REFUSAL_ZH)
    else:
        b.user(b.rng.choice(REFUSALS_EN))
        b.assistant(REFUSAL_EN)


def _multi(b: SessionBuilder, region: str, month: str) -> None:
    """A follow-up about another region, sometimes a thank-you after it."""
    _sales_turn(b, region, month)
    other = b.rng.choice([r for r in REGIONS if r != region])
    b.user(f"And for {other}?")
    _answer_sales(b, other, month)
    if b.rng.random() < 0.5:
        b.user("Thanks!")
        b.assistant("You're welcome. Anything else on the sales data?")


def _empty(b: SessionBuilder, region: str, month: str) -> None:
    """An edge case: the query finds no rows."""
    b.user(f"What were sales in the {region} region for December 2030?")
    query = f"SELECT SUM(amount) FROM sales WHERE region = '{region}' AND month = 'December 2030'"
    (cid,) = b.assistant(None, [("query_database", {"query": query, "database": "prod_sales"})])
    b.tool_result(cid, "query_database", json.dumps({"rows": []}))
    b.assistant(f"There are no sales recorded for the {region} region in December 2030; that period has no data yet.")


def _invalid_date(b: SessionBuilder, region: str, month: str) -> None:
    b.user("Show me sales for February 30th.")
    b.assistant("February 30th is not a valid date. Did you mean February 28th, or the whole month of February?")


def _tool_error(b: SessionBuilder, region: str, month: str) -> None:
    """A failed tool call, then the agent's own recovery."""
    b.user(f"What were total sales in the {region} region for {month} 2025?")
    bad = f"SELECT SUM(amount) FROM sales_2025 WHERE region = '{region}'"
    (cid,) = b.assistant(None, [("query_database", {"query": bad, "database": "prod_sales"})])
    b.tool_result(cid, "query_database", 'ERROR: relation "sales_2025" does not exist', is_error=True, exit_code=1)
    _answer_sales(b, region, f"{month} 2025")


def _aborted(b: SessionBuilder, region: str, month: str) -> None:
    """A turn the user stopped, then the question answered."""
    b.user(f"Give me a full breakdown of {month} sales by region and product.")
    b.assistant("Let me pull the breakdown by region and", stop="aborted", error="Request was aborted")
    _sales_turn(b, region, month)


def _secrets(b: SessionBuilder, region: str, month: str) -> None:
    """Planted PII and a credential in a tool result, for the scrubber."""
    plant = b.rng.choice(
        [
            f"My phone is {b.rng.choice(PHONES)}.",
            f"Use key {b.rng.choice(SECRETS)} if needed.",
            f"Charge card {b.rng.choice(CARDS)}.",
            f"Reply to {b.rng.choice(CONTACTS)}.",
        ]
    )
    _sales_turn(b, region, month, plant=plant)
    b.user("Which database connection did you use?")
    (cid,) = b.assistant(
        None, [("query_database", {"query": "SELECT current_setting('app.dsn')", "database": "finance_dw"})]
    )
    b.tool_result(
        cid, "query_database", json.dumps({"rows": [{"dsn": "postgres://analyst:Pa55w0rd!@dw.internal:5432/finance"}]})
    )
    b.assistant("I used the finance_dw connection on dw.internal, port 5432, as the analyst user.")


def _image(b: SessionBuilder, region: str, month: str) -> None:
    """A question with a screenshot attached."""
    text = f"Here is a screenshot of the {region} dashboard. What were total sales for {month}?"
    image = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    b.user([{"type": "text", "text": text}, {"type": "image", "data": image, "mimeType": "image/png"}])
    _answer_sales(b, region, month)


def _branch(b: SessionBuilder, region: str, month: str) -> None:
    """A wrong answer the user rewound past and asked again: only the second branch is the conversation."""
    b.user(f"What were total sales in the {region} region for {month}?")
    fork = b.leaf
    b.assistant("I think it was about a million dollars.")  # abandoned: the user rewound and asked again
    b.rewind(fork)
    _answer_sales(b, region, month)


def _compaction(b: SessionBuilder, region: str, month: str) -> None:
    """A long session OpenClaw compacted: three regions, an exchange rate, the summary, then one more region."""
    for r in REGIONS[:3]:
        _sales_turn(b, r, month)
    first_kept = b.leaf
    _fx_turn(b)
    b.compact(f"The user asked for {month} sales of North, South and East; all were answered.", first_kept, 52_000)
    _sales_turn(b, "West", month)


SCRIPTS: dict[str, Callable[[SessionBuilder, str, str], None]] = {
    "sales": _sales,
    "fx": _fx,
    "chart": _chart,
    "report": _report_turn,
    "plain": _plain,
    "refusal": _refusal,
    "multi": _multi,
    "empty": _empty,
    "invalid_date": _invalid_date,
    "tool_error": _tool_error,
    "aborted": _aborted,
    "secrets": _secrets,
    "image": _image,
    "branch": _branch,
    "compaction": _compaction,
}


def script(kind: str, b: SessionBuilder) -> None:
    """Append the conversation of one session of the given kind (a region and a month are drawn for every kind, so
    the sessions after it are the same whichever kind this one is)."""
    region, month = b.rng.choice(REGIONS), b.rng.choice(MONTHS)
    if kind not in SCRIPTS:
        raise ValueError(kind)
    SCRIPTS[kind](b, region, month)


KINDS = [
    ("sales", 26),
    ("fx", 10),
    ("chart", 6),
    ("report", 6),
    ("plain", 8),
    ("refusal", 14),
    ("multi", 10),
    ("empty", 4),
    ("invalid_date", 3),
    ("tool_error", 5),
    ("aborted", 3),
    ("secrets", 5),
    ("image", 3),
    ("branch", 3),
]


def _session_times(rng: random.Random, n: int) -> list[datetime]:
    times = []
    for i in range(n):
        lo, hi = IN_RANGE if i % 5 < 3 else OUT_RANGES[rng.random() < 0.5]
        times.append(lo + timedelta(seconds=rng.uniform(0, (hi - lo).total_seconds())))
    return sorted(times)


def build_sessions(n_sessions: int = 400, seed: int = 7) -> list[SessionBuilder]:
    """All sample sessions, oldest first (a compaction session included)."""
    rng = random.Random(seed)
    names, weights = zip(*KINDS, strict=True)
    builders = []
    for i, start in enumerate(_session_times(rng, n_sessions)):
        version = 4 if start >= STORE_SWITCH else (1 if i < 3 else 2 if i < 6 else 3)
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        channel = rng.choice(["telegram", "webchat", "cli"])
        key = (
            f"agent:{AGENT_ID}:main"
            if channel == "cli"
            else f"agent:{AGENT_ID}:{channel}:direct:{rng.randint(100, 999)}"
        )
        b = SessionBuilder(random.Random(rng.getrandbits(64)), start, version, session_id, channel, key)
        if version > 1:
            b.add({"type": "model_change", "provider": "openai", "modelId": "gpt-5.1"}, seconds=0)
            b.add(
                {
                    "type": "custom",
                    "customType": "model-snapshot",
                    "data": {"provider": "openai", "modelId": "gpt-5.1"},
                },
                seconds=0.1,
            )
        kind = "compaction" if i == n_sessions // 2 else rng.choices(names, weights)[0]
        script(kind, b)
        if version >= 2 and rng.random() < 0.03:
            b.add(
                {
                    "type": "custom",
                    "customType": "openclaw:prompt-error",
                    "data": {"runId": "r1", "error": "provider timeout"},
                }
            )
        builders.append(b)
    return builders


def _runtime_events(b: SessionBuilder, truncate_prompt: bool) -> list[dict[str, Any]]:
    prompt: Any = (
        {
            "truncated": True,
            "reason": "trajectory-field-size-limit",
            "originalChars": len(GENERIC_PROMPT),
            "limitChars": 32768,
        }
        if truncate_prompt
        else GENERIC_PROMPT
    )
    base = {
        "traceSchema": "openclaw-trajectory",
        "schemaVersion": 1,
        "sessionId": b.session_id,
        "sessionKey": b.session_key,
        "source": "runtime",
    }
    return [
        {**base, "type": "session.started", "seq": 1, "data": {"agentId": AGENT_ID, "toolCount": len(TOOLS)}},
        {**base, "type": "context.compiled", "seq": 2, "data": {"systemPrompt": prompt, "tools": TOOLS}},
        {**base, "type": "session.ended", "seq": 3, "data": {"status": "success"}},
    ]


def _header(b: SessionBuilder) -> dict[str, Any] | None:
    if b.version == 1:
        return None
    header: dict[str, Any] = {
        "type": "session",
        "id": b.session_id,
        "timestamp": b.start.isoformat().replace("+00:00", "Z"),
        "cwd": "/home/demo/finance",
    }
    if b.version >= 2:
        header["version"] = b.version
    return header


def _jsonl(b: SessionBuilder) -> bytes:
    header = _header(b)
    lines = ([header] if header else []) + b.entries
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()


STORE_SCHEMA = """
create table schema_meta(meta_key text primary key, role text, schema_version integer, agent_id text, app_version text, created_at integer, updated_at integer);
create table session_windows(session_id text primary key, session_key text, previous_session_id text, reason text, created_at integer, updated_at integer, status text, channel text, model_provider text, model text);
create table session_nodes(session_key text primary key, current_session_id text, entry_json text, updated_at integer);
create table transcript_events(session_id text not null, seq integer not null, event_json text, created_at integer, event_zstd blob, event_utf8_bytes integer, navigation_json text, primary key(session_id, seq));
create table transcript_event_identities(session_id text, event_id text, seq integer, event_type text, parent_id text, message_idempotency_key text, created_at integer);
create table session_transcript_active_events(session_id text, active_position integer, event_seq integer, message_position integer, context_eligible integer);
create table trajectory_runtime_events(session_id text, seq integer, run_id text, event_json text, created_at integer);
"""


def _write_store(path: Path, builders: list[SessionBuilder]) -> None:
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=3)
    conn = sqlite3.connect(path)
    conn.executescript(STORE_SCHEMA)
    conn.execute("insert into schema_meta values ('primary', 'agent', 23, ?, '2026.9.6', 0, 0)", (AGENT_ID,))
    for b in builders:
        created = int(b.start.timestamp() * 1000)
        conn.execute(
            "insert into session_windows values (?,?,?,?,?,?,?,?,?,?)",
            (b.session_id, b.session_key, None, "initial", created, created, "active", b.channel, "openai", "gpt-5.1"),
        )
        events: list[Any] = [_header(b), *b.entries]
        by_id = {e["id"]: e for e in b.entries}
        active, node = [], b.leaf
        while node:
            active.append(node)
            node = by_id[node].get("parentId")
        seq_of = {e["id"]: seq for seq, e in enumerate(events) if e and "id" in e and e.get("type") != "session"}
        for seq, event in enumerate(events):
            text = json.dumps(event, ensure_ascii=False)
            raw = text.encode()
            if len(raw) >= 1024:
                row = (
                    b.session_id,
                    seq,
                    None,
                    created,
                    cctx.compress(raw),
                    len(raw),
                    json.dumps({"type": event.get("type")}),
                )
            else:
                row = (b.session_id, seq, text, created, None, len(raw), None)  # type: ignore[assignment]
            conn.execute("insert into transcript_events values (?,?,?,?,?,?,?)", row)
            if event and event.get("type") != "session":
                conn.execute(
                    "insert into transcript_event_identities values (?,?,?,?,?,?,?)",
                    (b.session_id, event["id"], seq, event["type"], event.get("parentId"), None, created),
                )
        for pos, entry_id in enumerate(reversed(active)):
            conn.execute(
                "insert into session_transcript_active_events values (?,?,?,?,?)",
                (b.session_id, pos, seq_of[entry_id], None, 1),
            )
        for event in _runtime_events(b, truncate_prompt=True):
            conn.execute(
                "insert into trajectory_runtime_events values (?,?,?,?,?)",
                (b.session_id, event["seq"], "run-1", json.dumps(event), created),
            )
        conn.execute(
            "insert or replace into session_nodes values (?,?,?,?)",
            (b.session_key, b.session_id, json.dumps({"sessionId": b.session_id}), created),
        )
    conn.commit()
    conn.close()


def make_state_dir(root: Path, n_sessions: int = 400, seed: int = 7) -> Path:
    """Write the sample state folder under `root` (replacing any earlier one) and return it."""
    import shutil

    import zstandard

    state = root / "openclaw-state"
    if state.exists():
        shutil.rmtree(state)
    sessions_dir = state / "agents" / AGENT_ID / "sessions"
    (sessions_dir / "cold").mkdir(parents=True)
    builders = build_sessions(n_sessions, seed)
    old = [b for b in builders if b.version < 4]
    index: dict[str, Any] = {}
    for i, b in enumerate(old):
        data = _jsonl(b)
        if b.version == 3 and i % 10 == 9:  # archived to cold storage: zstd, named by content hash
            (sessions_dir / "cold" / f"{hashlib.sha256(data).hexdigest()}.jsonl.zst").write_bytes(
                zstandard.ZstdCompressor().compress(data)
            )
            continue
        (sessions_dir / f"{b.session_id}.jsonl").write_bytes(data)
        trajectory = "".join(json.dumps(e) + "\n" for e in _runtime_events(b, truncate_prompt=False))
        (sessions_dir / f"{b.session_id}.trajectory.jsonl").write_text(trajectory, encoding="utf-8")
        index.setdefault(
            b.session_key,
            {"sessionId": b.session_id, "updatedAt": int(b.clock.timestamp() * 1000), "channel": b.channel},
        )
        index[f"{b.session_key}#{b.session_id[:8]}"] = {"sessionId": b.session_id, "channel": b.channel}
    (sessions_dir / "sessions.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    # A crash mid-write leaves a truncated last line: the export reports it (file:line) and keeps the rest.
    crashed = next(b for b in reversed(old) if b.version == 3)
    with open(sessions_dir / f"{crashed.session_id}.jsonl", "ab") as fh:
        fh.write(
            b'{"type":"message","id":"deadbeef","parentId":"'
            + str(crashed.leaf).encode()
            + b'","message":{"role":"user","con'
        )
    # Files OpenClaw keeps beside transcripts that are not transcripts.
    first = old[-1].session_id
    (sessions_dir / f"{first}.jsonl.lock").write_text("12345")
    (sessions_dir / f"{first}.trajectory-path.json").write_text("{}")
    (sessions_dir / f".checkpoint.{first}.jsonl").write_text('{"type":"checkpoint"}\n')
    (sessions_dir / f"{first}.jsonl.deleted.1767225600000").write_bytes(_jsonl(old[0]))
    _write_store(
        state / "agents" / AGENT_ID / "agent" / "openclaw-agent.sqlite", [b for b in builders if b.version == 4]
    )
    # A second agent, so filtering by agent is visible.
    other = state / "agents" / "ops-agent" / "sessions"
    other.mkdir(parents=True)
    (other / f"{builders[0].session_id}.jsonl").write_bytes(_jsonl(builders[0]))
    return state
