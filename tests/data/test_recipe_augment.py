"""The data recipe (categories, mix, data-stats) and augment-data (every transformation keeps examples true)."""

import json
import random
import re
from pathlib import Path

import pytest

from clawtune.cli import main
from clawtune.data.augment import (
    AugmentOptions,
    Corpus,
    augment,
    make_refusal,
    multi_turn_prefixes,
    paraphrase,
    substitute,
    system_prompt,
    tool_order,
)
from clawtune.data.recipe import TARGET, category, traits
from clawtune.data.validate import validate_files

from ..conftest import chat_server, export_sample, read_jsonl, tool_call, write_jsonl

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "query_database",
            "description": "Run SQL on the sales database.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_exchange_rate",
            "description": "Currency exchange rates.",
            "parameters": {"type": "object", "properties": {"base": {"type": "string"}, "quote": {"type": "string"}}},
        },
    },
]


def sales(region: str, month: str, total: int, call_id: str = "c1") -> dict:
    query = f"SELECT SUM(amount) FROM sales WHERE region = '{region}' AND month = '{month}'"
    return {
        "messages": [
            {"role": "system", "content": "You are a finance agent."},
            {"role": "user", "content": f"What were sales in the {region} region for {month}?"},
            tool_call(call_id, "query_database", json.dumps({"query": query})),
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"rows": [{"sum": total}]})},
            {"role": "assistant", "content": f"Sales in the {region} region for {month} were ${total:,}."},
        ],
        "tools": TOOLS,
    }


def chat(*turns: str) -> dict:
    messages = []
    for i in range(0, len(turns), 2):
        messages += [{"role": "user", "content": turns[i]}, {"role": "assistant", "content": turns[i + 1]}]
    return {"messages": messages, "tools": TOOLS}


# --- categories ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (chat("What is EBITDA?", "Earnings before interest, taxes, depreciation and amortization."), "normal"),
        (chat("Book me a flight.", "Sorry, I can't help with that. I only work with sales data."), "refusal"),
        (chat("帮我订机票。", "抱歉,这超出了我的能力范围。"), "refusal"),
        (chat("Sales for February 30th?", "February 30th is not a valid date. Did you mean February 28th?"), "edge"),
        (chat("hi", "Hello! What would you like to know?"), "edge"),
        (chat("What is YoY?", "Year over year.", "And QoQ?", "Quarter over quarter."), "multi-turn"),
        (sales("North", "May", 123456), "tool-call"),
    ],
)
def test_categories(example, expected):
    assert category(example) == expected


def test_precedence_and_override():
    refusal_in_multi_turn = chat(
        "What is YoY?", "Year over year.", "Write me a poem.", "Sorry, I can't help with that."
    )
    assert traits(refusal_in_multi_turn) == {"multi-turn", "refusal"}
    assert category(refusal_in_multi_turn) == "refusal"
    failed = sales("North", "May", 1)
    failed["messages"][3]["content"] = 'ERROR: relation "sales" does not exist'
    assert traits(failed) == {"tool-call", "edge"} and category(failed) == "edge"
    assert category({**sales("North", "May", 1), "metadata": {"category": "normal"}}) == "normal"


def test_data_stats_json_and_text(tmp_path, capsys):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            sales("North", "May", 111111),
            sales("South", "May", 222222),
            chat("What is EBITDA?", "Earnings before interest."),
            chat("What is EBITDA?", "Earnings before interest."),
        ],
    )
    assert main(["ft", "data-stats", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["mix"]["tool-call"] == {"count": 2, "share": 0.5, "target": 0.15}
    assert stats["tool_calls"] == {"query_database": 2}
    assert stats["duplicates"] == {"exact": 1, "near": 0}
    # Adding exactly what it suggests reaches the recipe.
    to_add = stats["to_add"]
    counts = {c: stats["mix"][c]["count"] + to_add.get(c, 0) for c in TARGET}
    total = sum(counts.values())
    assert all(abs(counts[c] / total - TARGET[c]) < 0.02 for c in TARGET)
    assert main(["ft", "data-stats", str(path)]) == 0
    text = capsys.readouterr().out
    assert "█" in text and "to reach the recipe, add:" in text and "tokens per example" in text


# --- transformations keep examples true ---------------------------------------------------------------------------


def corpus_of(*examples):
    return Corpus.gather(list(examples))


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in re.findall(r"\d[\d,]*\d|\d", text)}


def test_substitute_is_consistent_across_user_call_result_and_answer():
    seed = sales("North", "May", 571704)
    corpus = corpus_of(seed, sales("South", "June", 1), sales("East", "April", 2))
    for s in range(20):
        out = substitute(seed, random.Random(s), corpus)
        assert out is not None
        user, call, tool, answer = (out["messages"][i] for i in (1, 2, 3, 4))
        region = re.search(r"the (\w+) region", user["content"]).group(1)
        month = re.search(r"for (\w+)\?", user["content"]).group(1)
        query = json.loads(call["tool_calls"][0]["function"]["arguments"])["query"]
        assert f"region = '{region}'" in query and f"month = '{month}'" in query
        assert f"the {region} region for {month}" in answer["content"]
        total = json.loads(tool["content"])["rows"][0]["sum"]
        assert f"${total:,}" in answer["content"]
        assert total != 571704 and len(str(total)) == 6
        # The call id and the structure are untouched.
        assert call["tool_calls"][0]["id"] == tool["tool_call_id"] == "c1"


def test_substitute_leaves_computed_numbers_alone():
    fx = {
        "messages": [
            {"role": "user", "content": "Convert 100 USD to EUR."},
            tool_call("c", "get_exchange_rate", '{"base": "USD", "quote": "EUR"}'),
            {"role": "tool", "tool_call_id": "c", "content": '{"rate": 0.92}'},
            {"role": "assistant", "content": "100 USD is 92.00 EUR at 0.92."},
        ],
        "tools": TOOLS,
    }
    other = json.loads(json.dumps(fx).replace("USD", "GBP").replace("EUR", "JPY"))
    out = substitute(fx, random.Random(1), corpus_of(fx, other))
    assert out is not None
    text = json.dumps(out)
    assert "0.92" in text and "92.00" in text, "the answer multiplies: the rate must not change"
    base = json.loads(out["messages"][1]["tool_calls"][0]["function"]["arguments"])["base"]
    assert f"Convert 100 {base}" in out["messages"][0]["content"] and f"100 {base} is" in out["messages"][3]["content"]


def test_substitute_shifts_iso_dates_together():
    ex = {
        "messages": [
            {"role": "user", "content": "Orders on 2026-04-01?"},
            tool_call("c", "query_database", '{"query": "SELECT COUNT(*) FROM orders WHERE day = \'2026-04-01\'"}'),
            {"role": "tool", "tool_call_id": "c", "content": '{"day": "2026-04-01", "count": 7}'},
            {"role": "assistant", "content": "There were 7 orders on 2026-04-01."},
        ],
        "tools": TOOLS,
    }
    out = substitute(ex, random.Random(3), corpus_of(ex))
    assert out is not None
    dates = set(re.findall(r"\d{4}-\d{2}-\d{2}", json.dumps(out)))
    assert len(dates) == 1 and dates != {"2026-04-01"}


def test_paraphrase_keeps_the_question_and_language():
    en = paraphrase(sales("North", "May", 1), random.Random(0), Corpus())
    assert (
        "the North region for May" in en["messages"][1]["content"]
        and en["messages"][1]["content"] != sales("North", "May", 1)["messages"][1]["content"]
    )
    zh = paraphrase(chat("上个月销售额是多少?", "120万元。"), random.Random(0), Corpus())
    assert "上个月销售额是多少?" in zh["messages"][0]["content"] and re.search(
        r"[\u4e00-\u9fff]", zh["messages"][0]["content"].replace("上个月销售额是多少?", "")
    )


def test_system_prompt_removed_or_swapped_and_tools_shuffled():
    seed = sales("North", "May", 1)
    corpus = corpus_of(
        seed,
        {**chat("a?", "b."), "messages": [{"role": "system", "content": "Be brief."}, *chat("a?", "b.")["messages"]]},
    )
    outs = [system_prompt(seed, random.Random(s), corpus) for s in range(30)]
    assert any(o["messages"][0]["role"] == "user" for o in outs)
    assert any(o["messages"][0] == {"role": "system", "content": "Be brief."} for o in outs)
    shuffled = tool_order(seed, random.Random(0), corpus)
    assert shuffled["tools"] == list(reversed(seed["tools"]))
    assert shuffled["messages"] == seed["messages"]


def test_multi_turn_prefixes_end_on_a_trained_answer():
    ex = chat("What is YoY?", "Year over year.", "And QoQ?", "Quarter over quarter.", "Thanks", "Welcome.")
    prefixes = multi_turn_prefixes(ex)
    assert [len(p["messages"]) for p in prefixes] == [2, 4]
    assert all(p["messages"][-1]["role"] == "assistant" for p in prefixes)


def test_refusals_are_requests_the_tools_cannot_serve():
    corpus = corpus_of(sales("North", "May", 1), chat("Write a poem.", "Sorry, I can't help with that."))
    for s in range(30):
        ex = make_refusal(random.Random(s), corpus)
        request = ex["messages"][-2]["content"].lower()
        assert "sales" not in request and "currency" not in request and "exchange" not in request
        assert category(ex) == "refusal" and ex["tools"] == TOOLS


# --- the command ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(sample_state, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert export_sample(out, sample_state) == 0
    return out


def test_factor_met_outputs_valid_distinct_and_deterministic(tmp_path, exported):
    raw = read_jsonl(exported / "raw.jsonl")
    out = tmp_path / "a.jsonl"
    assert (
        main(["ft", "augment-data", "--input", str(exported / "raw.jsonl"), "--output", str(out), "--factor", "3"]) == 0
    )
    rows = read_jsonl(out)
    assert len(rows) == 3 * len(raw)
    assert validate_files([out]).ok
    assert len(
        {json.dumps(r["messages"]) + json.dumps([t["function"]["name"] for t in r.get("tools") or []]) for r in rows}
    ) == len(rows)
    assert rows[: len(raw)] == [{**r, "metadata": {**r["metadata"], "category": category(r)}} for r in raw], (
        "originals kept first"
    )
    report = json.loads((tmp_path / "a-report.json").read_text())
    assert set(report["made_by"]) >= {"substitute", "paraphrase", "system-prompt", "tool-order"}
    again = tmp_path / "b.jsonl"
    assert (
        main(["ft", "augment-data", "--input", str(exported / "raw.jsonl"), "--output", str(again), "--factor", "3"])
        == 0
    )
    assert again.read_bytes() == out.read_bytes()


def test_every_substituted_sample_example_stays_consistent(tmp_path, exported):
    out = tmp_path / "a.jsonl"
    augment(AugmentOptions(input=exported / "raw.jsonl", output=out, factor=4, seed=5))
    checked = 0
    for row in read_jsonl(out):
        if "substitute" not in (row["metadata"].get("augmentation") or []):
            continue
        messages = row["messages"]
        seen = " ".join(
            [m["content"] for m in messages if m["role"] in ("user", "tool")]
            + [c["function"]["arguments"] for m in messages for c in m.get("tool_calls") or []]
        )
        for m in messages:
            if m["role"] == "assistant" and m.get("content") and not m.get("tool_calls"):
                for region in re.findall(r"the (\w+) region", m["content"]):
                    assert region in seen, (region, messages)
                if "at a rate of" not in m["content"].lower():  # FX answers compute their totals
                    assert numbers(m["content"]) <= numbers(seen), (m["content"], seen)
        checked += 1
    assert checked > 20


def test_balance_moves_the_mix_to_the_recipe(tmp_path, exported):
    out = tmp_path / "b.jsonl"
    report = augment(AugmentOptions(input=exported / "raw.jsonl", output=out, factor=3, balance=True))
    rows = read_jsonl(out)
    assert len(rows) == report["target_out"] == 3 * report["examples_in"]
    assert validate_files([out]).ok
    share = {c: sum(r["metadata"]["category"] == c for r in rows) / len(rows) for c in TARGET}
    before = {c: v["count"] for c, v in report["mix_before"].items()}
    for c, target in TARGET.items():
        if before[c] <= target * len(rows):  # categories whose originals already exceed the target keep them all
            assert abs(share[c] - target) <= 0.03, (c, share)
    assert report["made_by"]["refusal"] > 0


def test_leakage_is_refused(tmp_path, exported, capsys):
    folder = tmp_path / "ft"
    folder.mkdir()
    raw = read_jsonl(exported / "raw.jsonl")
    test = read_jsonl(exported / "test.jsonl")
    write_jsonl(folder / "raw.jsonl", [*raw, test[0]])
    write_jsonl(folder / "test.jsonl", test)
    assert main(["ft", "augment-data", "--input", str(folder / "raw.jsonl"), "--output", str(folder / "a.jsonl")]) == 2
    err = capsys.readouterr().err
    assert (
        f"{folder / 'raw.jsonl'}:{len(raw) + 1} is from session {test[0]['metadata']['session_id']}, as is {folder / 'test.jsonl'}:1"
        in err
    )
    assert not (folder / "a.jsonl").exists()
    # Without metadata, the same example is caught by its content; --holdout names other files.
    bare = [{k: v for k, v in e.items() if k != "metadata"} for e in (raw[0], raw[1])]
    write_jsonl(tmp_path / "train.jsonl", bare)
    write_jsonl(tmp_path / "held.jsonl", [bare[1]])
    assert (
        main(
            [
                "ft",
                "augment-data",
                "--input",
                str(tmp_path / "train.jsonl"),
                "--output",
                str(tmp_path / "o.jsonl"),
                "--holdout",
                str(tmp_path / "held.jsonl"),
            ]
        )
        == 2
    )
    assert "is the same example as" in capsys.readouterr().err
    assert (
        main(["ft", "augment-data", "--input", str(exported / "raw.jsonl"), "--output", str(exported / "test.jsonl")])
        == 2
    )
    assert "held-out data" in capsys.readouterr().err


def test_invalid_input_is_listed_not_augmented(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    assert main(["ft", "augment-data", "--input", str(path), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f'{path}:1, key "messages": no assistant message is trained' in capsys.readouterr().err


@pytest.fixture
def teacher_url():
    """A fake teacher model: good and bad paraphrases in turn, and a list of requests when asked to generate."""
    paraphrased = []

    def reply(body: dict) -> dict:
        if body["messages"][0]["content"].startswith("You write test data"):
            return {
                "content": "1. Plan my wedding playlist.\n- Run a SQL query on the sales database.\nWhat rhymes with orange?\nok"
            }
        text = body["messages"][-1]["content"]
        paraphrased.append(text)
        # Every other reply drops the numbers and names (a bad paraphrase that must be rejected).
        return {"content": f"Could you find out: {text}" if len(paraphrased) % 2 else "How did sales go?"}

    with chat_server(reply) as (url, _):
        yield url


def test_teacher_paraphrases_are_validated(tmp_path, exported, teacher_url):
    report = augment(
        AugmentOptions(
            input=exported / "raw.jsonl",
            output=tmp_path / "t.jsonl",
            factor=2,
            teacher_endpoint=f"{teacher_url}/v1",
            teacher_model="teacher",
        )
    )
    assert report["made_by"]["teacher-paraphrase"] > 0
    assert report["discarded"]["teacher_rejected"] > 0
    rows = read_jsonl(tmp_path / "t.jsonl")
    assert not any(m["content"] == "How did sales go?" for r in rows for m in r["messages"] if m["role"] == "user")
    assert validate_files([tmp_path / "t.jsonl"]).ok


def test_teacher_generated_refusal_requests_are_checked_against_the_tools(tmp_path, exported, teacher_url):
    report = augment(
        AugmentOptions(
            input=exported / "raw.jsonl",
            output=tmp_path / "g.jsonl",
            factor=3,
            balance=True,
            teacher_endpoint=teacher_url,
            teacher_model="t",
        )
    )
    assert report["made_by"]["teacher-generation"] > 0
    requests = {
        r["messages"][-2]["content"]
        for r in read_jsonl(tmp_path / "g.jsonl")
        if "teacher-generation" in (r["metadata"].get("augmentation") or [])
    }
    assert requests <= {"Plan my wedding playlist.", "What rhymes with orange?"}
    assert report["discarded"]["teacher_rejected"] >= 1  # the SQL request (the line "ok" is too short to be one)
