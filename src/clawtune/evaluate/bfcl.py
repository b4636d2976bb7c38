"""The Berkeley Function Calling Leaderboard's cases, scored by its own AST checker (`bfcl-eval`).

`bfcl-eval` pins numpy 1.26 and pulls sentence-transformers, faiss, vLLM clients and a dozen SDKs for its model
handlers; its data files and its AST checker need none of them. So it is installed without its dependencies
(`pip install --no-deps bfcl-eval==2026.3.23`, as `make install` does), which leaves clawtune's numpy alone, and
the checker's one heavy import (the model registry, used only to know whether a model's API turns "." in function
names into "_") is answered by a stand-in that says: yes, as every OpenAI-compatible endpoint needs.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from clawtune.problems import InputError

PIN = "bfcl-eval==2026.3.23"
# clawtune's short names -> BFCL v4 data files (the categories scored by the AST checker, plus irrelevance).
CATEGORIES = {
    "simple": "simple_python",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
    "live_simple": "live_simple",
    "live_multiple": "live_multiple",
    "live_parallel": "live_parallel",
    "live_irrelevance": "live_irrelevance",
}
MODEL_NAME = "clawtune"


class BFCLError(InputError):
    """The benchmark cannot run: the package is missing, or a category is unknown."""


@dataclass(frozen=True)
class Case:
    """One BFCL question with the functions offered and the answers its checker accepts."""

    id: str
    category: str  # BFCL's own category name (simple_python, multiple, irrelevance, ...)
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]  # BFCL's function documents, as its checker reads them
    possible_answer: list[dict[str, Any]] | None  # None for irrelevance: the right answer is no call

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The functions as OpenAI tools: "." in names becomes "_", BFCL's types become JSON Schema's."""
        return [{"type": "function", "function": _openai_function(f)} for f in self.functions]


def _package_dir() -> Path:
    spec = find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BFCLError(
            f"--benchmark bfcl needs the BFCL package, without its dependencies: pip install --no-deps {PIN}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def parse_spec(spec: str) -> list[str]:
    """`bfcl:simple,multiple,irrelevance` -> BFCL category names; every unknown one named at once."""
    name, _, rest = spec.partition(":")
    if name != "bfcl":
        raise BFCLError(
            f"unknown benchmark {name!r}: the one clawtune runs is bfcl (e.g. bfcl:simple,multiple,irrelevance)"
        )
    wanted = [part.strip() for part in (rest or "simple,multiple,irrelevance").split(",") if part.strip()]
    unknown = [w for w in wanted if w not in CATEGORIES]
    if unknown:
        raise BFCLError(f"unknown BFCL categories {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
    return [CATEGORIES[w] for w in wanted]


def load_cases(category: str, limit: int | None = None) -> list[Case]:
    """The first `limit` cases of one BFCL category, with their accepted answers."""
    data = _package_dir() / "data"
    questions = _read_jsonl(data / f"BFCL_v4_{category}.json")
    answers = {}
    if "irrelevance" not in category:
        answers = {
            row["id"]: row["ground_truth"] for row in _read_jsonl(data / "possible_answer" / f"BFCL_v4_{category}.json")
        }
    cases = []
    for row in questions[:limit]:
        turns = row["question"]
        if len(turns) != 1:  # multi-turn categories need BFCL's executable environment, not the AST checker
            continue
        cases.append(
            Case(
                id=row["id"],
                category=category,
                messages=turns[0],
                functions=row["function"],
                possible_answer=answers.get(row["id"]) if answers else None,
            )
        )
    return cases


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise BFCLError(f"{path}: no such BFCL data file (is {PIN} installed?)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _openai_function(function: dict[str, Any]) -> dict[str, Any]:
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI  # a plain dict; no heavy imports

    def convert(schema: Any) -> Any:
        if isinstance(schema, dict):
            out = {k: convert(v) for k, v in schema.items()}
            if isinstance(out.get("type"), str):
                out["type"] = GORILLA_TO_OPENAPI.get(out["type"], out["type"])
            return out
        if isinstance(schema, list):
            return [convert(v) for v in schema]
        return schema

    return {
        "name": function["name"].replace(".", "_"),
        "description": function.get("description", ""),
        "parameters": convert(function.get("parameters", {"type": "object", "properties": {}})),
    }


def _checker() -> Any:
    """BFCL's `ast_checker` module, imported with a stand-in for its model registry (see the module docstring)."""
    _package_dir()
    registry = "bfcl_eval.constants.model_config"
    if registry not in sys.modules:
        stand_in = types.ModuleType(registry)
        stand_in.MODEL_CONFIG_MAPPING = {MODEL_NAME: types.SimpleNamespace(underscore_to_dot=True)}  # type: ignore[attr-defined]
        sys.modules[registry] = stand_in
    return importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")


def check(case: Case, tool_calls: list[dict[str, Any]] | None) -> tuple[bool, str | None]:
    """BFCL's verdict on the calls a model made for `case`: (valid, BFCL's error) ."""
    calls = tool_calls or []
    if case.possible_answer is None:
        return (
            not calls,
            None if not calls else f"called {calls[0].get('function', {}).get('name')} on an irrelevant request",
        )
    if not calls:
        return (False, "no function call")
    output = []
    for call in calls:
        function = call.get("function", {})
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            return (False, "arguments are not valid JSON")
        if not isinstance(parsed, dict):
            return (False, "arguments are not a JSON object")
        output.append({function.get("name", ""): parsed})
    checker = _checker()
    from bfcl_eval.constants.enums import Language

    result = checker.ast_checker(
        case.functions, output, case.possible_answer, Language.PYTHON, case.category, MODEL_NAME
    )
    return (bool(result["valid"]), None if result["valid"] else "; ".join(map(str, result.get("error", []))))
