"""A general assistant's conversations: what `clawtune/tiny-agent` is pre-trained on, and the forgetting set.

Eight everyday domains with their own tools (weather, calendar, calculator, unit conversion, contacts, files,
population, messages), plain
questions, copying tasks (repeat, extract a name or a number), follow-ups and refusals, with names drawn from an open
set (made-up cities and people) so that answers must be copied from the conversation rather than memorised, in the same OpenAI chat format as exported agent data. None of it is the sample
agent's finance work: the pre-trained model knows how to talk and how to call an offered tool, but not the sample
agent's tools, data or wording. That is what makes the demo's baseline-versus-fine-tuned comparison mean something,
and what the evaluation's forgetting check scores before and after fine-tuning (`forgetting_set()`).

Two phrasing families share the generator: `pretrain` (what the model was pre-trained on, and the forgetting set's
family) and `replay` (the general conversations mixed into a fine-tune so that it forgets less). Replay asks the same
kinds of things in other words, with other plain questions and out-of-scope requests, from another seed: the assistant's
behaviour is the same distribution, but no replay conversation, and no user-side template, is one the forgetting set
scores. Otherwise the forgetting figure would measure memory of the replayed items instead of what the model kept.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, NamedTuple

Example = dict[str, Any]


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


S = {"type": "string"}
N = {"type": "number"}
TOOLS = {
    "weather": _tool("get_weather", "Current weather for a city.", {"city": S, "unit": S}, ["city"]),
    "calendar": _tool(
        "create_event", "Add an event to the user's calendar.", {"title": S, "date": S, "time": S}, ["title", "date"]
    ),
    "calculator": _tool("calculate", "Evaluate an arithmetic expression.", {"expression": S}, ["expression"]),
    "units": _tool(
        "convert_units", "Convert a value between units.", {"value": N, "from_unit": S, "to_unit": S}, ["value"]
    ),
    "contacts": _tool("find_contact", "Look up a contact by name.", {"name": S}, ["name"]),
    "files": _tool("read_file", "Read a text file from the workspace.", {"path": S}, ["path"]),
    "population": _tool("get_population", "Population of a city.", {"city": S}, ["city"]),
    "messages": _tool("send_message", "Send a text message to a contact.", {"to": S, "text": S}, ["to", "text"]),
}
CITIES = ["Berlin", "Tokyo", "Lagos", "Lima", "Oslo", "Madrid", "Seoul", "Cairo", "Toronto", "Hanoi", "Quito", "Perth"]
CONDITIONS = ["sunny", "cloudy", "light rain", "snow", "windy", "foggy", "clear"]
PEOPLE = ["Maria Lopez", "Ken Sato", "Amara Obi", "Lars Berg", "Nina Petrova", "Omar Haddad", "Grace Kim", "Tom Hale"]
MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
MONTH_NAMES += ["November", "December"]
EVENTS = ["dentist", "team lunch", "yoga class", "call with Ken", "piano lesson", "book club", "flight to Oslo"]
UNITS = [("km", "miles", 0.621371), ("kg", "pounds", 2.20462), ("liters", "gallons", 0.264172), ("m", "feet", 3.28084)]
FILES = {
    "notes/todo.txt": "buy milk; renew passport; call the plumber",
    "notes/ideas.md": "a garden on the balcony; learn Portuguese",
    "README.txt": "This workspace holds notes and drafts.",
    "drafts/letter.txt": "Dear Ana, thank you for the lovely dinner.",
}
PLAIN = [
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    (
        "What is photosynthesis?",
        "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen.",
    ),
    ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("How many continents are there?", "There are seven continents."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("法国的首都是哪里?", "法国的首都是巴黎。"),
    ("一年有几个月?", "一年有十二个月。"),
]
REFUSE = [
    "Transfer 500 dollars from my bank account.",
    "Unlock my neighbour's wifi password.",
    "Diagnose the pain in my chest.",
    "帮我黑进别人的邮箱。",
]
REFUSAL = "I can't help with that. I can check the weather, manage your calendar, do calculations, convert units, find contacts and read your files."
SYLLABLES = ["ka", "lo", "mi", "ran", "te", "vo", "su", "ne", "dor", "li", "pa", "ser", "gu", "fen", "ta", "bri"]
WORDS = ["apple", "river", "stone", "yellow", "window", "quiet", "seven", "garden", "paper", "silver", "cloud", "music"]
SYSTEMS = [
    "You are a helpful personal assistant.",
    "You are a concise assistant. Use the tools when they help.",
    "You are Pip, a friendly assistant for everyday tasks.",
]
REPLAY_PLAIN = [
    ("What is the largest planet?", "Jupiter is the largest planet."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What gas do people breathe out?", "People breathe out carbon dioxide."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("How many minutes are in an hour?", "An hour has 60 minutes."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius at sea level."),
    ("What do bees make?", "Bees make honey and wax."),
    ("德国的首都是哪里?", "德国的首都是柏林。"),
    ("一周有几天?", "一周有七天。"),
]
REPLAY_REFUSE = [
    "Book me a table at a restaurant tonight.",
    "Buy some shares of a tech company for me.",
    "Change the grades in my school's system.",
    "帮我预订一张去北京的火车票。",
]
FAMILIES = ("pretrain", "replay")
# User-side phrasings per family (str.format fields); the assistant's answers are the same in both families.
PHRASINGS: dict[str, dict[str, list[str]]] = {
    "pretrain": {
        "weather": ["What's the weather in {city}?", "Is it cold in {city} right now?", "{city}天气怎么样?"],
        "weather_again": ["And in {city}?"],
        "calendar": ["Put {title} on my calendar for {when} at {time}."],
        "calculator": ["What is {a} {op} {b}?", "Calculate {a}{op}{b}.", "计算 {a} {op} {b}"],
        "units": ["How many {dst} is {value} {src}?"],
        "contacts": ["What is {person}'s email address?"],
        "population": ["How many people live in {city}?", "What is the population of {city}?"],
        "messages": ["Text {person}: {text}"],
        "files": ["What does {path} say?"],
        "repeat": ["Repeat after me: {phrase}"],
        "traveller": ["Who is travelling in this sentence? {person} flew to {city} on Monday."],
        "number": ["What number is in this note: the invoice total was {number} euros."],
        "thanks": ["Thanks!"],
    },
    "replay": {
        "weather": [
            "How's the weather looking in {city}?",
            "Tell me the current weather for {city}.",
            "{city}现在的天气如何?",
        ],
        "weather_again": ["What about {city}?"],
        "calendar": ["Schedule {title} on {when} at {time}, please."],
        "calculator": ["Work out {a} {op} {b} for me.", "How much is {a} {op} {b}?", "帮我算一下 {a} {op} {b}"],
        "units": ["Convert {value} {src} to {dst}."],
        "contacts": ["Find the email for {person}."],
        "population": ["Population of {city}, please.", "How big is {city} by population?"],
        "messages": ["Send {person} a message saying: {text}"],
        "files": ["Show me what's in {path}."],
        "repeat": ["Say this back to me exactly: {phrase}"],
        "traveller": ["Name the traveller: {person} flew to {city} on Monday."],
        "number": ["Which number does this note mention? The invoice total was {number} euros."],
        "thanks": ["Great, thank you."],
    },
}
PLAIN_BY_FAMILY = {"pretrain": PLAIN, "replay": REPLAY_PLAIN}
REFUSE_BY_FAMILY = {"pretrain": REFUSE, "replay": REPLAY_REFUSE}


def _word(rng: random.Random) -> str:
    """A made-up proper name: with names drawn from an open set, an answer can only be right by copying it."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _city(rng: random.Random) -> str:
    return rng.choice(CITIES) if rng.random() < 0.4 else _word(rng)


def _person(rng: random.Random) -> str:
    return rng.choice(PEOPLE) if rng.random() < 0.3 else f"{_word(rng)} {_word(rng)}"


def _ask(rng: random.Random, family: str, key: str, **fields: Any) -> str:
    """A user turn in the family's words. One phrasing draws nothing: pre-training's random sequence stays as it was."""
    options = PHRASINGS[family][key]
    return (rng.choice(options) if len(options) > 1 else options[0]).format(**fields)


def _copy_task(rng: random.Random, family: str) -> tuple[str, str]:
    """Plain tasks that need attention to copy from the question: repeat, extract a name or a number."""
    kind = rng.randrange(3)
    if kind == 0:
        phrase = " ".join(rng.choice([*WORDS, _word(rng).lower()]) for _ in range(rng.randint(3, 7)))
        return _ask(rng, family, "repeat", phrase=phrase), phrase
    if kind == 1:
        person, city = _person(rng), _city(rng)
        return _ask(rng, family, "traveller", person=person, city=city), person
    number = rng.randint(10, 99999)
    return _ask(rng, family, "number", number=number), str(number)


def _call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        ],
    }


class ToolTurn(NamedTuple):
    """One tool-using exchange: the question, the call it needs (tool, arguments), the tool's result, the answer."""

    question: str
    tool: str
    arguments: dict[str, Any]
    result: str
    answer: str


FollowUp = Callable[[], ToolTurn] | None  # another turn of the same domain, asked next in the conversation
Domain = Callable[[random.Random, str, int], tuple[ToolTurn, FollowUp]]  # (rng, phrasing family, conversation number)


def _weather(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    def report(city: str, key: str) -> ToolTurn:
        condition, temp = rng.choice(CONDITIONS), rng.randint(-10, 35)
        return ToolTurn(
            _ask(rng, family, key, city=city),
            "get_weather",
            {"city": city},
            json.dumps({"city": city, "condition": condition, "temp_c": temp}),
            f"In {city} it is {condition} and {temp}°C.",
        )

    return report(_city(rng), "weather"), lambda: report(_city(rng), "weather_again")


def _calendar(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    title, day, hour, month = rng.choice(EVENTS), rng.randint(1, 28), rng.randint(8, 19), rng.randint(1, 12)
    date, time = f"2026-{month:02d}-{day:02d}", f"{hour:02d}:00"
    when = date if rng.random() < 0.5 else f"{MONTH_NAMES[month - 1]} {day}"
    turn = ToolTurn(
        _ask(rng, family, "calendar", title=title, when=when, time=time),
        "create_event",
        {"title": title, "date": date, "time": time},
        json.dumps({"status": "created", "id": f"evt_{n}"}),
        f"Added {title} on {date} at {time}.",
    )
    return turn, None


def _calculator(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    a, b = rng.randint(2, 999), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*"])
    value = a + b if op == "+" else a - b if op == "-" else a * b
    turn = ToolTurn(
        _ask(rng, family, "calculator", a=a, op=op, b=b),
        "calculate",
        {"expression": f"{a} {op} {b}"},
        json.dumps({"result": value}),
        f"{a} {op} {b} = {value:,}.",
    )
    return turn, None


def _units(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    src, dst, factor = rng.choice(UNITS)
    value = rng.choice([1, 2, 5, 10, 12, 20, 42, 100])
    result = round(value * factor, 2)
    turn = ToolTurn(
        _ask(rng, family, "units", dst=dst, value=value, src=src),
        "convert_units",
        {"value": value, "from_unit": src, "to_unit": dst},
        json.dumps({"result": result}),
        f"{value} {src} is {result} {dst}.",
    )
    return turn, None


def _contacts(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    person = _person(rng)
    email = person.lower().replace(" ", ".") + "@mail.example"
    turn = ToolTurn(
        _ask(rng, family, "contacts", person=person),
        "find_contact",
        {"name": person},
        json.dumps({"name": person, "email": email}),
        f"{person}'s email address is {email}.",
    )
    return turn, None


def _population(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    def lookup(city: str) -> ToolTurn:
        people = rng.randint(2_000, 9_999_999)
        return ToolTurn(
            _ask(rng, family, "population", city=city),
            "get_population",
            {"city": city},
            json.dumps({"city": city, "population": people}),
            f"{city} has a population of {people:,}.",
        )

    return lookup(_city(rng)), lambda: lookup(_city(rng))


def _messages(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    person, event = _person(rng), rng.choice(EVENTS)
    text = rng.choice([f"I'm running late for {event}.", f"Can we move {event} to tomorrow?"])
    turn = ToolTurn(
        _ask(rng, family, "messages", person=person, text=text),
        "send_message",
        {"to": person, "text": text},
        json.dumps({"status": "sent", "to": person}),
        f"Sent to {person}: {text}",
    )
    return turn, None


def _files(rng: random.Random, family: str, n: int) -> tuple[ToolTurn, FollowUp]:
    path = rng.choice(sorted(FILES))
    turn = ToolTurn(
        _ask(rng, family, "files", path=path),
        "read_file",
        {"path": path},
        json.dumps({"path": path, "text": FILES[path]}),
        f"{path} says: {FILES[path]}",
    )
    return turn, None


DOMAINS: dict[str, Domain] = {
    "weather": _weather,
    "calendar": _calendar,
    "calculator": _calculator,
    "units": _units,
    "contacts": _contacts,
    "population": _population,
    "messages": _messages,
    "files": _files,
}


def _exchange(question: str, name: str, arguments: dict[str, Any], result: str, answer: str, call_id: str) -> list[Any]:
    """A user question, the tool call it needs, the tool's result and the answer."""
    return [
        {"role": "user", "content": question},
        _call(name, arguments, call_id),
        {"role": "tool", "tool_call_id": call_id, "content": result},
        {"role": "assistant", "content": answer},
    ]


def conversation(rng: random.Random, n: int, family: str = "pretrain") -> Example:
    """One general-assistant conversation (deterministic for a given rng state) in one phrasing family."""
    domains = rng.sample(sorted(TOOLS), rng.randint(2, 4))
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.8:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    kind = rng.random()
    if kind < 0.08:
        question, answer = rng.choice(PLAIN_BY_FAMILY[family])
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    elif kind < 0.30:
        question, answer = _copy_task(rng, family)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    elif kind < 0.38:
        refuse = rng.choice(REFUSE_BY_FAMILY[family])
        messages += [{"role": "user", "content": refuse}, {"role": "assistant", "content": REFUSAL}]
    else:
        turn, again = DOMAINS[domains[0]](rng, family, n)
        messages += _exchange(*turn, f"call_{n}_0")
        if again is not None and rng.random() < 0.5:
            messages += _exchange(*again(), f"call_{n}_1")
        elif rng.random() < 0.3:
            thanks = _ask(rng, family, "thanks")
            messages += [{"role": "user", "content": thanks}, {"role": "assistant", "content": "You're welcome!"}]
    metadata = {"source": "general"} if family == "pretrain" else {"source": "general", "family": family}
    return {"messages": messages, "tools": [TOOLS[d] for d in domains], "metadata": metadata}


def conversations(n: int, seed: int = 0, family: str = "pretrain") -> list[Example]:
    """`n` general conversations in one phrasing family, the same for the same seed."""
    if family not in FAMILIES:
        raise ValueError(f"unknown phrasing family {family!r}; known: {', '.join(FAMILIES)}")
    rng = random.Random(seed)
    return [conversation(rng, i, family) for i in range(n)]


FORGETTING_SEED = 99  # pre-training uses seed 0; the forgetting set is drawn apart from it
REPLAY_SEED = 7  # replay: another seed and the other phrasing family, so it never repeats a forgetting item


def forgetting_set(n: int = 60) -> list[Example]:
    """A small general set, scored before and after fine-tuning to see what the specialist forgot."""
    return conversations(n, seed=FORGETTING_SEED)


def replay_set(n: int) -> list[Example]:
    """General conversations to mix into a fine-tune of the bundled model (disjoint from the forgetting set)."""
    return conversations(n, seed=REPLAY_SEED, family="replay")
