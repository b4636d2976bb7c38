"""`clawtune ft augment-data`: grow a dataset N-fold with transformations that keep every example true.

Each transformation keeps the tool calls, the tool results and the answers consistent with each other:

- substitute: an entity that the user names and a tool argument carries (a region, a currency, a month...) is
  replaced everywhere in the example by another value seen in the same slot elsewhere in the data (the slot is the
  tool, the argument and the text before the value, e.g. `query_database.query` after `region = '`); numbers that the
  tool returned and the answer quotes are changed together in every format they appear in (451965, 451,965); ISO dates
  shift together by the same number of days. Where an answer holds a number that nothing in the conversation explains
  (a computed total), numbers are left alone, since changing an input would make the answer wrong.
- paraphrase: the user's turns reworded by templates (English and Chinese), or by a teacher model through any
  OpenAI-compatible endpoint, kept only when every entity and number of the original survives;
- system-prompt: the prompt removed (the model learns to work without it: the seed's token savings) or swapped for
  another prompt of the data;
- tool-order: the tool list shuffled;
- multi-turn-prefix: the first turns of a multi-turn conversation as an example of their own;
- multi-turn-join: two single-turn conversations of the same tools asked one after the other (with --balance);
- refusal: an out-of-scope request that none of the agent's tools can serve, answered with one of the agent's own
  refusals (with --balance); a teacher, if given, also generates such requests, kept only if they share no word with
  the tools' names and descriptions.

Validation and test data are never read for training and never touched: an input that shares sessions or examples
with them is refused (leakage). Every output passes `ft validate`; duplicates are dropped.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from clawtune.artifacts.files import atomic_write, write_json_atomic
from clawtune.data.examples import duplicate_keys
from clawtune.data.holdout import HeldOut, Holdouts, export_ids, find_holdouts, leakage_message, leaks
from clawtune.data.options import AugmentOptions
from clawtune.data.recipe import CATEGORIES, TARGET, category, data_stats, traits
from clawtune.data.validate import check_example, iter_examples
from clawtune.messages import Example, Message, content_text
from clawtune.problems import InputError, Problems

PARAPHRASES_EN = [
    "Could you tell me this: {q}",
    "Quick question. {q}",
    "{q} Thanks!",
    "Hi! {q}",
    "Please help with this: {q}",
    "I need this for a report. {q}",
    "{q} Please keep it short.",
    "Hello, {q_lower}",
]
PARAPHRASES_ZH = ["请问:{q}", "麻烦帮我看一下:{q}", "{q} 谢谢!", "你好,{q}", "想了解一下:{q}"]
OUT_OF_SCOPE_EN = [
    "Book me a table for two at an Italian restaurant tonight.",
    "Write a short poem about autumn leaves.",
    "What's the weather going to be like in Tokyo tomorrow?",
    "Can you recommend a good science fiction novel?",
    "Translate 'good morning' into French and German.",
    "Help me plan a three-day trip to Lisbon.",
    "What should I cook for dinner with chicken and rice?",
    "Tell me a joke about cats.",
    "Who won the football world cup in 2018?",
    "Fix the wifi on my laptop.",
    "Write a cover letter for a nursing job.",
    "Which vitamins should I take every day?",
]
OUT_OF_SCOPE_ZH = [
    "帮我订一家今晚的火锅店。",
    "给我讲个笑话吧。",
    "明天北京的天气怎么样?",
    "推荐几本好看的小说。",
    "帮我写一封求职信。",
    "周末去杭州玩,帮我规划一下行程。",
]
GENERIC_REFUSAL_EN = "Sorry, I can't help with that. I can only help with: {scope}."
GENERIC_REFUSAL_ZH = "抱歉,这超出了我的能力范围。我可以帮你:{scope}。"
CJK = re.compile(r"[\u4e00-\u9fff]")
TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*[A-Za-z0-9]|[A-Za-z]")
NUMBER = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,]|\.\d)|(?<![\w.,])\d+(?:\.\d+)?(?![\w,]|\.\d)")
ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
MONTH_WORDS = re.compile(
    r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\b|\d{1,2}/\d{1,2}/\d{2,4}|\d+月", re.IGNORECASE
)


# --- what the whole input teaches the transformations ------------------------------------------------------------


@dataclass
class Corpus:
    """Facts gathered from all training examples: slot values, prompts, refusals, the tool catalog."""

    slots: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    system_prompts: list[str] = field(default_factory=list)
    refusals_en: list[str] = field(default_factory=list)
    refusals_zh: list[str] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def gather(cls, examples: list[Example]) -> Corpus:
        corpus = cls()
        prompts: Counter[str] = Counter()
        tool_lists: Counter[bytes] = Counter()
        for example in examples:
            for value, slot in slot_values(example):
                corpus.slots.setdefault(slot, set()).add(value)
            messages = example["messages"]
            if messages and messages[0]["role"] == "system":
                prompts[content_text(messages[0].get("content"))] += 1
            if example.get("tools"):
                tool_lists[orjson.dumps(example["tools"])] += 1
            if "refusal" in traits(example):
                answer = content_text(messages[-1].get("content"))
                (corpus.refusals_zh if CJK.search(answer) else corpus.refusals_en).append(answer)
        corpus.system_prompts = [p for p, _ in prompts.most_common()]
        if tool_lists:
            corpus.tools = orjson.loads(tool_lists.most_common(1)[0][0])
        corpus.refusals_en = sorted(set(corpus.refusals_en))
        corpus.refusals_zh = sorted(set(corpus.refusals_zh))
        return corpus


def _string_values(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _string_values(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for inner in value:
            yield from _string_values(inner, path)


def _calls(example: Example) -> Iterator[tuple[str, Any]]:
    for m in example["messages"]:
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                yield str(fn.get("name")), json.loads(fn.get("arguments") or "{}")
            except ValueError:
                continue


def slot_values(example: Example) -> Iterator[tuple[str, tuple[str, str, str]]]:
    """(value, slot) for each word of a user turn that a tool argument also carries."""
    user_words = {
        w for m in example["messages"] if m["role"] == "user" for w in TOKEN.findall(content_text(m.get("content")))
    }
    for name, args in _calls(example):
        for path, text in _string_values(args):
            for match in TOKEN.finditer(text):
                word = match.group(0)
                if word in user_words and len(word) > 1:
                    before = text[max(0, match.start() - 12) : match.start()]
                    yield word, (name, path, before)


# --- transformations -----------------------------------------------------------------------------------------------


def _replace_everywhere(example: Example, pairs: list[tuple[re.Pattern[str], str]]) -> Example:
    """Apply the same replacements to every user, assistant and tool text and every tool-call argument."""

    def fix(text: str) -> str:
        for pattern, new in pairs:
            text = pattern.sub(new, text)
        return text

    messages = []
    for m in example["messages"]:
        m = dict(m)
        if m["role"] != "system" and isinstance(m.get("content"), str):
            m["content"] = fix(m["content"])
        if m.get("tool_calls"):
            m["tool_calls"] = [
                {**c, "function": {**c["function"], "arguments": _fix_arguments(c["function"]["arguments"], fix)}}
                for c in m["tool_calls"]
            ]
        messages.append(m)
    return {**example, "messages": messages}


def _fix_arguments(arguments: str, fix: Callable[[str], str]) -> str:
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return fix(arguments)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return fix(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return json.dumps(walk(parsed), ensure_ascii=False)


def substitute(example: Example, rng: random.Random, corpus: Corpus) -> Example | None:
    """Swap entities, numbers and dates consistently across the user turns, tool calls, tool results and answers."""
    pairs: list[tuple[re.Pattern[str], str]] = []
    used: set[str] = set()
    slots = sorted(set(slot_values(example)))
    present = {v for v, _ in slots}  # never a value the example already holds: two regions must stay two regions
    for value, slot in slots:
        if value in used:
            continue
        choices = sorted(corpus.slots.get(slot, set()) - present - used)
        if not choices:
            continue
        new = rng.choice(choices)
        used.update((value, new))
        pairs.append((re.compile(rf"(?<![\w]){re.escape(value)}(?![\w])"), new))
    pairs += _number_pairs(example, rng) + _date_pairs(example, rng)
    if not pairs:
        return None
    return _replace_everywhere(example, pairs)


def _plain(number: str) -> str:
    return number.replace(",", "")


def _number_pairs(example: Example, rng: random.Random) -> list[tuple[re.Pattern[str], str]]:
    """New values for numbers a tool returned and an answer quotes, if every number in the answers is explained."""
    messages = example["messages"]
    inputs = " ".join(content_text(m.get("content")) for m in messages if m["role"] in ("user", "tool"))
    inputs += " ".join(str(c["function"].get("arguments")) for m in messages for c in m.get("tool_calls") or [])
    known = {_plain(n) for n in NUMBER.findall(inputs)}
    answers = [content_text(m.get("content")) for m in messages if m["role"] == "assistant"]
    answer_numbers = {_plain(n) for a in answers for n in NUMBER.findall(a)}
    if not answer_numbers or not answer_numbers <= known:
        return []  # an answer computes something from the inputs: changing an input would make it wrong
    tool_numbers = {
        _plain(n) for m in messages if m["role"] == "tool" for n in NUMBER.findall(content_text(m.get("content")))
    }
    user_numbers = {
        _plain(n) for m in messages if m["role"] == "user" for n in NUMBER.findall(content_text(m.get("content")))
    }
    pairs = []
    for old in sorted((tool_numbers & answer_numbers) - user_numbers):
        whole, _, decimals = old.partition(".")
        if len(whole) < 2:
            continue  # counts and small ids carry meaning (row 1, 2 items): leave them
        low, high = 10 ** (len(whole) - 1), 10 ** len(whole) - 1
        new_whole = str(rng.randint(low, high))
        new = new_whole + ("." + "".join(str(rng.randint(0, 9)) for _ in decimals) if decimals else "")
        grouped_old, grouped_new = f"{int(whole):,}", f"{int(new_whole):,}"
        if decimals:
            grouped_old += "." + decimals
            grouped_new += "." + new.partition(".")[2]
        for before, after in {(grouped_old, grouped_new), (old, new)}:
            pairs.append((re.compile(rf"(?<![\w.,]){re.escape(before)}(?![\w,]|\.\d)"), after))
    return pairs


def _date_pairs(example: Example, rng: random.Random) -> list[tuple[re.Pattern[str], str]]:
    """Shift every ISO date by the same days, unless dates also appear in forms we would not shift (May, 5/1)."""
    text = orjson.dumps(example["messages"]).decode()
    dates = set(ISO_DATE.findall(text))
    if not dates or MONTH_WORDS.search(ISO_DATE.sub("", text)):
        return []
    shift = timedelta(days=rng.choice([d for d in range(-45, 46) if d]))
    pairs = []
    for y, m, d in sorted(dates):
        try:
            new = date(int(y), int(m), int(d)) + shift
        except ValueError:
            return []
        pairs.append((re.compile(rf"\b{y}-{m}-{d}\b"), new.isoformat()))
    return pairs


def paraphrase(example: Example, rng: random.Random, corpus: Corpus) -> Example | None:
    """Reword the user's turns with a template (English or Chinese to match the turn)."""
    messages = [dict(m) for m in example["messages"]]
    changed = False
    for m in messages:
        if m["role"] != "user" or not isinstance(m.get("content"), str) or not m["content"].strip():
            continue
        q = m["content"].strip()
        template = rng.choice(PARAPHRASES_ZH if CJK.search(q) else PARAPHRASES_EN)
        m["content"] = template.format(q=q, q_lower=q[:1].lower() + q[1:])
        changed = True
    return {**example, "messages": messages} if changed else None


def system_prompt(example: Example, rng: random.Random, corpus: Corpus) -> Example | None:
    """Remove the system prompt, or swap it for another prompt the data uses."""
    messages = example["messages"]
    if not messages or messages[0]["role"] != "system":
        if not corpus.system_prompts:
            return None
        return {**example, "messages": [{"role": "system", "content": corpus.system_prompts[0]}, *messages]}
    current = content_text(messages[0].get("content"))
    others = [p for p in corpus.system_prompts if p != current]
    if others and rng.random() < 0.3:
        return {**example, "messages": [{"role": "system", "content": rng.choice(others)}, *messages[1:]]}
    return {**example, "messages": messages[1:]}


def tool_order(example: Example, rng: random.Random, corpus: Corpus) -> Example | None:
    """Shuffle the offered tools (the model must not depend on their order)."""
    tools = list(example.get("tools") or [])
    if len(tools) < 2:
        return None
    shuffled = tools[:]
    while shuffled == tools:
        rng.shuffle(shuffled)
    return {**example, "tools": shuffled}


TRANSFORMS: dict[str, Callable[[Example, random.Random, Corpus], Example | None]] = {
    "substitute": substitute,
    "paraphrase": paraphrase,
    "system-prompt": system_prompt,
    "tool-order": tool_order,
}


def multi_turn_prefixes(example: Example) -> list[Example]:
    """The conversation cut after each trained answer before the last: earlier turns as examples of their own."""
    messages = example["messages"]
    cuts = []
    for i, m in enumerate(messages[:-1]):
        if (
            m["role"] == "assistant"
            and not m.get("tool_calls")
            and m.get("weight", 1) != 0
            and messages[i + 1]["role"] == "user"
        ):
            cuts.append(i + 1)
    return [{**example, "messages": messages[:cut]} for cut in cuts]


def multi_turn_join(first: Example, second: Example) -> Example | None:
    """Two single-turn conversations with the same tools, asked one after the other in one session."""
    if orjson.dumps(first.get("tools")) != orjson.dumps(second.get("tools")):
        return None
    tail = [m for m in second["messages"] if m["role"] != "system"]
    ids = {c["id"] for m in first["messages"] for c in m.get("tool_calls") or []}
    if ids & {c["id"] for m in tail for c in m.get("tool_calls") or []}:
        return None
    return {**first, "messages": [*first["messages"], *tail]}


def tool_vocabulary(corpus: Corpus) -> set[str]:
    """The words of the agent's tool names and descriptions: a request using them may be one the tools serve."""
    return {
        w.lower()
        for t in corpus.tools
        for w in TOKEN.findall(
            json.dumps(t.get("function", {}).get("description", ""))
            + " "
            + str(t.get("function", {}).get("name", "")).replace("_", " ")
        )
        if len(w) > 3
    }


def out_of_scope(request: str, vocabulary: set[str]) -> bool:
    """Whether a request shares no word with the tools' vocabulary (so no tool of the agent could serve it)."""
    return not {w.lower() for w in TOKEN.findall(request)} & vocabulary


def make_refusal(rng: random.Random, corpus: Corpus, extra_requests: list[str] | None = None) -> Example | None:
    """An out-of-scope request none of the agent's tools serves, answered in the agent's own refusal words."""
    vocabulary = tool_vocabulary(corpus)
    zh = rng.random() < 0.3
    pool = OUT_OF_SCOPE_ZH if zh else [*OUT_OF_SCOPE_EN, *(extra_requests or [])]
    requests = [r for r in pool if out_of_scope(r, vocabulary)]
    if not requests:
        return None
    own = corpus.refusals_zh if zh else corpus.refusals_en
    if own:
        answer = rng.choice(own)
    else:
        scope = ", ".join(t["function"]["name"].replace("_", " ") for t in corpus.tools) or "the tasks I was set up for"
        answer = (GENERIC_REFUSAL_ZH if zh else GENERIC_REFUSAL_EN).format(scope=scope)
    messages: list[Message] = []
    if corpus.system_prompts:
        messages.append({"role": "system", "content": corpus.system_prompts[0]})
    messages += [{"role": "user", "content": rng.choice(requests)}, {"role": "assistant", "content": answer}]
    example: Example = {"messages": messages, "metadata": {"category": "refusal"}}
    if corpus.tools:
        example["tools"] = corpus.tools
    return example


# --- the command ---------------------------------------------------------------------------------------------------


def load(path: Path) -> list[tuple[int, Example]]:
    """(line, example) of a JSONL file; any unreadable or invalid line stops the run with every problem listed."""
    problems = Problems(keep=20)
    examples = []
    for line, example in iter_examples(path, problems):
        check_example(example, str(path), line, problems)
        examples.append((line, example))
    if problems:
        listed = "\n  ".join(str(p) for p in problems.items)
        raise InputError(f"{path} has {len(problems)} problems (run `clawtune ft validate {path}`):\n  {listed}")
    return examples


def check_leakage(examples: list[tuple[int, Example]], options: AugmentOptions) -> tuple[Holdouts, HeldOut]:
    """Refuse training data that shares sessions or examples with the held-out files of the export that made it (found
    through the export id in its metadata), the validation and test files beside it, and `--holdout`."""
    found = find_holdouts(options.input, export_ids(e for _, e in examples), extra=options.holdout)
    if options.output.resolve() in {p.resolve() for p in found.files}:
        raise InputError(f"--output {options.output} is held-out data; augmenting must never write to it")
    held = HeldOut.read(found.files)
    leaked = leaks(examples, options.input, held)
    if leaked:
        raise InputError(leakage_message("augment", leaked, found.notes))
    return found, held


def check_output(options: AugmentOptions) -> None:
    """Never write over the input (an existing output needs `force`, checked once the held-out files are known)."""
    if options.output.exists() and options.output.resolve() == options.input.resolve():
        raise InputError(
            f"--output {options.output} is the input: augmenting would replace the originals; write to another file "
            "(e.g. augmented.jsonl beside it)"
        )
    if options.output.is_dir():
        raise InputError(f"--output {options.output} is a folder; name the file to write (e.g. augmented.jsonl)")


@dataclass
class Augmenter:
    """One augmentation run: the originals, the corpus facts, and what has been written so far."""

    options: AugmentOptions
    originals: list[Example]
    corpus: Corpus
    rng: random.Random
    teacher: Callable[[str], str | None] | None = None
    teacher_requests: list[str] = field(default_factory=list)
    export_id: str | None = None  # the export that made the input: synthesized examples carry it too
    held_out: set[bytes] = field(default_factory=set)  # exact keys of the held-out examples
    out: list[Example] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    made: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, example: Example, how: list[str], seed_line: int | None) -> bool:
        """Keep a new example if it validates and is not a duplicate; returns whether it was kept."""
        exact, near = duplicate_keys(example)
        if exact in self.seen or near in self.seen:
            self.dropped["duplicate"] += 1
            return False
        if exact in self.held_out:
            self.dropped["same_as_held_out"] += 1
            return False
        problems = Problems()
        if not check_example(example, "augmented", None, problems):
            self.dropped["invalid"] += 1
            return False
        self.seen.update((exact, near))
        metadata = dict(example.get("metadata") or {})
        if how:
            metadata["augmentation"] = how
            metadata["augmented_from_line"] = seed_line
            if "refusal" not in how:
                # A variant's category comes from its own content (a prefix of a multi-turn example is single-turn);
                # only a synthesized refusal says what it is.
                metadata.pop("category", None)
        metadata["category"] = category({**example, "metadata": metadata})
        if self.export_id:
            metadata.setdefault("export_id", self.export_id)
        self.out.append({**example, "metadata": metadata})
        for name in how:
            self.made[name] += 1
        return True

    def variant(self, seed: Example) -> tuple[Example, list[str]] | None:
        """A new example from a seed by a random combination of transformations (at least one applies)."""
        names = [n for n in TRANSFORMS if self.rng.random() < 0.55] or [self.rng.choice(list(TRANSFORMS))]
        example, applied = seed, list[str]()
        prefixes = multi_turn_prefixes(seed)
        if prefixes and self.rng.random() < 0.3:
            example, applied = self.rng.choice(prefixes), ["multi-turn-prefix"]
        for name in names:
            result = TRANSFORMS[name](example, self.rng, self.corpus)
            if result is not None:
                example, applied = result, [*applied, name]
        if self.teacher and self.rng.random() < 0.5:
            result = self.teacher_paraphrase(example)
            if result is not None:
                example, applied = result, [*applied, "teacher-paraphrase"]
        return (example, applied) if applied else None

    def teacher_paraphrase(self, example: Example) -> Example | None:
        assert self.teacher is not None
        messages = [dict(m) for m in example["messages"]]
        users = [m for m in messages if m["role"] == "user" and isinstance(m.get("content"), str)]
        if not users:
            return None
        target = users[-1]
        original = target["content"]
        rewritten = self.teacher(original)
        if not rewritten or not keeps_facts(original, rewritten):
            self.dropped["teacher_rejected"] += 1
            return None
        target["content"] = rewritten
        return {**example, "messages": messages}

    def grow(
        self,
        seeds: list[tuple[int, Example]],
        wanted: int,
        produce: Callable[[int, Example], tuple[Example, list[str]] | None],
    ) -> int:
        """Add up to `wanted` new examples made from the seeds in turn; gives up after many fruitless tries."""
        added, tries = 0, 0
        while added < wanted and seeds and tries < 40 * wanted + 100:
            line, seed = seeds[tries % len(seeds)]
            tries += 1
            made = produce(line, seed)
            if made and self.add(made[0], made[1], line):
                added += 1
        return added


STOPWORDS = {
    "i",
    "hi",
    "please",
    "could",
    "can",
    "what",
    "which",
    "how",
    "and",
    "the",
    "you",
    "your",
    "with",
    "that",
    "this",
    "for",
    "from",
    "were",
    "was",
    "did",
    "does",
}


def keeps_facts(original: str, rewritten: str) -> bool:
    """Accept a paraphrase only if it keeps every number and capitalised name of the original and at least half of
    its content words (for Chinese, its characters), is not the original itself, and is not padded out."""
    if rewritten.strip() == original.strip() or len(rewritten) > 4 * len(original) + 40:
        return False
    names = {w for w in TOKEN.findall(original) if w[:1].isupper() and w.lower() not in STOPWORDS}
    if not all(f in rewritten for f in set(NUMBER.findall(original)) | names):
        return False
    words = {w.lower() for w in TOKEN.findall(original) if len(w) > 3 and w.lower() not in STOPWORDS}
    kept = {w.lower() for w in TOKEN.findall(rewritten)}
    chars = set(CJK.findall(original))
    if words and len(words & kept) < len(words) / 2:
        return False
    return not (chars and len(chars & set(CJK.findall(rewritten))) < len(chars) / 2)


def targets(originals: list[Example], total: int) -> dict[str, int]:
    """How many examples of each category the balanced output should have.

    Originals are never dropped, so a category already over its share keeps its originals; the rest of the total is
    shared among the others in proportion to their target shares.
    """
    have = Counter(category(e) for e in originals)
    over = {c for c in CATEGORIES if have[c] >= TARGET[c] * total}
    while True:
        budget = total - sum(have[c] for c in over)
        share = sum(TARGET[c] for c in CATEGORIES if c not in over)
        wanted = {c: have[c] if c in over else round(budget * TARGET[c] / share) for c in CATEGORIES}
        newly_over = {c for c in CATEGORIES if c not in over and have[c] > wanted[c]}
        if not newly_over:
            return wanted
        over |= newly_over


def augment(options: AugmentOptions) -> dict[str, Any]:
    """Run one augmentation and write the output; returns the report."""
    if options.factor < 1:
        raise InputError(f"--factor {options.factor}: must be at least 1 (the originals are always kept)")
    check_output(options)
    if not options.input.is_file():
        raise InputError(f"--input {options.input}: no such file")
    indexed = load(options.input)
    if not indexed:
        raise InputError(f"{options.input} has no examples")
    holdouts, held = check_leakage(indexed, options)
    if options.output.exists() and not options.force:
        raise InputError(f"--output {options.output} exists; pass --force to replace it")
    originals = [e for _, e in indexed]
    teacher = None
    if options.teacher_endpoint:
        from clawtune.data.teacher import Teacher

        teacher = Teacher(options.teacher_endpoint, options.teacher_model or "default", options.teacher_api_key)
        teacher.check()  # an unreachable teacher stops the run here, with the cause, not silently in the report
    ids = export_ids(originals)
    run = Augmenter(
        options,
        originals,
        Corpus.gather(originals),
        random.Random(options.seed),
        teacher.paraphrase if teacher else None,
        export_id=ids.most_common(1)[0][0] if len(ids) == 1 else None,
    )
    if teacher and options.balance:
        # Generated requests are kept only if none of the agent's tools could serve them.
        scope = "; ".join(str(t["function"].get("description") or t["function"]["name"]) for t in run.corpus.tools)
        vocabulary = tool_vocabulary(run.corpus)
        generated = teacher.out_of_scope_requests(scope or "the agent's own tasks")
        run.teacher_requests = [r for r in dict.fromkeys(generated) if out_of_scope(r, vocabulary)]
        run.dropped["teacher_rejected"] += len(generated) - len(run.teacher_requests)
    run.held_out = set(held.contents)  # a variant that happens to equal a held-out example is discarded
    for line, example in indexed:
        run.add(example, [], line)
    before = data_stats(run.out)
    total = round(options.factor * len(originals))
    if options.balance:
        balance(run, indexed, total)
    run.grow(indexed, total - len(run.out), lambda line, seed: run.variant(seed))
    after = data_stats(run.out)
    write_jsonl(options.output, run.out)
    return {
        "input": str(options.input),
        "output": str(options.output),
        "export_ids": dict(ids),
        "holdout_checked": [str(p) for p in holdouts.files],
        "notes": holdouts.notes,
        "factor": options.factor,
        "examples_in": len(originals),
        "examples_out": len(run.out),
        "target_out": total,
        "shortfall": max(0, total - len(run.out)),
        "made_by": dict(run.made.most_common()),
        "discarded": dict(run.dropped.most_common()),
        "mix_before": before.to_json()["mix"],
        "mix_after": after.to_json()["mix"],
        "teacher": {
            "endpoint": options.teacher_endpoint,
            "model": options.teacher_model,
            **(teacher.stats if teacher else {}),
        }
        if teacher
        else None,
    }


def balance(run: Augmenter, indexed: list[tuple[int, Example]], total: int) -> None:
    """Fill each under-represented category toward its target share, from its own seeds or by synthesis."""
    wanted = targets(run.originals, total)
    by_category: dict[str, list[tuple[int, Example]]] = {c: [] for c in CATEGORIES}
    for line, example in indexed:
        by_category[category(example)].append((line, example))
    singles = [(line, e) for line, e in indexed if sum(m["role"] == "user" for m in e["messages"]) == 1]

    def have(name: str) -> int:
        return sum(1 for e in run.out if e["metadata"]["category"] == name)

    def same_category(name: str) -> Callable[[int, Example], tuple[Example, list[str]] | None]:
        def produce(line: int, seed: Example) -> tuple[Example, list[str]] | None:
            made = run.variant(seed)
            return made if made and category({**made[0], "metadata": {}}) == name else None

        return produce

    for name in ("refusal", "edge", "normal", "multi-turn", "tool-call"):
        missing = wanted[name] - have(name)
        if missing <= 0:
            continue
        if name == "refusal":
            # Half new out-of-scope requests, half the agent's own refusals reworded: more kinds of request.
            missing -= run.grow([(0, {})], missing // 2, lambda line, seed: synthesize_refusal(run))
        missing -= run.grow(by_category[name], missing, same_category(name))
        if name == "refusal" and missing > 0:
            run.grow([(0, {})], missing, lambda line, seed: synthesize_refusal(run))
        if name == "multi-turn" and missing > 0:
            run.grow(singles, missing, lambda line, first: join_with_another(run, first, singles))


def synthesize_refusal(run: Augmenter) -> tuple[Example, list[str]] | None:
    """A new refusal example, or None when no out-of-scope request is left that the tools cannot serve."""
    refusal = make_refusal(run.rng, run.corpus, run.teacher_requests)
    if refusal is None:
        return None
    teacher_made = refusal["messages"][-2]["content"] in run.teacher_requests
    return refusal, ["refusal", "teacher-generation"] if teacher_made else ["refusal"]


def join_with_another(
    run: Augmenter, first: Example, singles: list[tuple[int, Example]]
) -> tuple[Example, list[str]] | None:
    """`first` followed by a randomly chosen other single-turn conversation of the same tools."""
    second = singles[run.rng.randrange(len(singles))][1]
    joined = multi_turn_join(first, second) if second is not first else None
    return (joined, ["multi-turn-join"]) if joined else None


def write_jsonl(path: Path, examples: list[Example]) -> None:
    """Write examples atomically (a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, binary=True) as fh:
        for example in examples:
            fh.write(orjson.dumps(example) + b"\n")


def run_augment(options: AugmentOptions) -> dict[str, Any]:
    """`ft augment-data`: augment, write the report beside the output, and say what was made."""
    import typer

    report = augment(options)
    report_path = options.report_path
    write_json_atomic(report_path, report)
    typer.echo(
        f"{report['examples_in']} examples -> {report['examples_out']} (target {report['target_out']}) in "
        f"{options.output}"
    )
    if report["shortfall"]:
        typer.secho(f"  {report['shortfall']} short of the target: the seeds ran out of distinct variants", fg="yellow")
    for note in report["notes"]:
        typer.secho(f"  note: {note}", fg="yellow")
    teacher = report["teacher"]
    if teacher and teacher["failures"]:
        typer.secho(
            f"  the teacher failed {teacher['failures']} of {teacher['requests']} requests (last: "
            f"{teacher['last_error']}); those examples used the offline transformations",
            fg="yellow",
        )
    typer.echo("  made by: " + (", ".join(f"{k} {v}" for k, v in report["made_by"].items()) or "nothing"))
    typer.echo("  candidates discarded: " + (", ".join(f"{k} {v}" for k, v in report["discarded"].items()) or "none"))
    before, after = report["mix_before"], report["mix_after"]
    typer.echo(
        "  mix:     "
        + ", ".join(
            f"{c} {before[c]['share']:.0%} -> {after[c]['share']:.0%} (target {after[c]['target']:.0%})"
            for c in CATEGORIES
        )
    )
    typer.echo(f"  report:  {report_path}")
    return report
