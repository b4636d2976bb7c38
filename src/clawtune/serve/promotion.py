"""A promotion written into models.yaml, and its undoing: the agent's model id served by B after the gateway restarts,
however the database fares.

The promotion is an entry of `experiments:` that sends every request for the agent's id to B
(`{id: <experiment>, model: <agent's id>, arms: {<B>: 100}}`): the incumbent's own entry stays as the user wrote it, so a
rollback only removes that entry (and puts back an entry it replaced: an earlier promotion, or a split of the same id
declared in the file). The file is edited with ruamel.yaml's round trip, which keeps the user's comments, key order
and quoting (PyYAML would drop every comment); a copy of the file as it was is kept beside it before each change, and
the new text replaces the old in one rename.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawtune.artifacts.files import write_text_atomic
from clawtune.problems import InputError


class PromotionError(InputError):
    """models.yaml cannot be changed as asked (unreadable, not a mapping, edited since); says why."""


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and styles survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _load(path: Path) -> Any:
    from ruamel.yaml.error import YAMLError

    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PromotionError(f"{path}: cannot read it: {exc}") from None
    except YAMLError as exc:
        raise PromotionError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PromotionError(f"{path}: the top level is not a mapping (models:, experiments:, server:)")
    return data


def _plain(value: Any) -> Any:
    """A ruamel node as plain Python (what the database stores)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _write(path: Path, data: Any, backup: bool) -> str | None:
    """Write `data` over `path` in one rename, after copying the file as it was beside it; the copy's path."""
    import io

    copy = None
    out = io.StringIO()
    _yaml().dump(data, out)
    try:
        if backup:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            copy = path.with_name(f"{path.name}.clawtune-{stamp}.bak")
            shutil.copy2(path, copy)
        write_text_atomic(path, out.getvalue())  # keeps the file's mode: a gateway config may hold keys
    except OSError as exc:
        raise PromotionError(f"{path}: cannot write it ({exc.strerror or exc}); nothing was changed") from None
    return str(copy) if copy else None


def promote_in_config(path: Path, experiment_id: str, model: str | None, arm: str, sticky: str) -> dict[str, Any]:
    """Add the promotion's entry to `experiments:` (replacing an entry of the same id, or one that splits the same
    model); what was done: {"path", "backup", "entry", "replaced": [entries taken out]}."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    data = _load(path)
    experiments: Any = data.get("experiments")
    if experiments is None:
        experiments = data["experiments"] = CommentedSeq()
    if not isinstance(experiments, CommentedSeq):
        raise PromotionError(f"{path}: experiments: is not a list")
    entry = CommentedMap()
    entry["id"] = experiment_id
    if model is not None:
        entry["model"] = model
    entry["arms"] = CommentedMap([(arm, 100)])
    if sticky != "session":
        entry["sticky"] = sticky
    replaced = []
    kept = CommentedSeq()
    for item in experiments:
        same = isinstance(item, dict) and (
            item.get("id") == experiment_id or (model is not None and item.get("model") == model)
        )
        if same:
            replaced.append(_plain(item))
        else:
            kept.append(item)
    if replaced == [_plain(entry)]:  # promoted already (a retry): nothing to write
        return {"path": str(path), "backup": None, "entry": _plain(entry), "replaced": []}
    for item in list(experiments):
        if item not in kept:
            experiments.remove(item)
    experiments.append(entry)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    target = f"{model!r}" if model else f"the model id {experiment_id!r}"
    experiments.yaml_set_comment_before_after_key(
        len(experiments) - 1,
        before=f"promoted by `clawtune ft ab-test` on {when}: {target} is served by {arm!r} "
        f"(`clawtune ft ab-test rollback {experiment_id}` undoes it)",
        indent=2,
    )
    backup = _write(path, data, backup=True)
    return {"path": str(path), "backup": backup, "entry": _plain(entry), "replaced": replaced}


def undo_in_config(record: dict[str, Any]) -> dict[str, Any]:
    """Take the promotion's entry out of models.yaml and put back what it replaced; what was done."""
    path = Path(record["path"])
    if not path.is_file():
        raise PromotionError(f"{path}: the models.yaml the promotion was written to is gone")
    data = _load(path)
    experiments = data.get("experiments")
    entry = record.get("entry") or {}
    if not isinstance(experiments, list):
        experiments = []
    ours = [item for item in experiments if isinstance(item, dict) and item.get("id") == entry.get("id")]
    if not ours and not record.get("replaced"):
        return {"path": str(path), "backup": None, "removed": None, "restored": []}  # undone already
    for item in ours:
        experiments.remove(item)
    present = {item.get("id") for item in experiments if isinstance(item, dict)}
    restored = [item for item in record.get("replaced") or [] if item.get("id") not in present]
    if restored:
        if "experiments" not in data or not isinstance(data["experiments"], list):
            from ruamel.yaml.comments import CommentedSeq

            data["experiments"] = experiments = CommentedSeq()
        experiments.extend(restored)
    if not ours and not restored:
        return {"path": str(path), "backup": None, "removed": None, "restored": []}
    if isinstance(data.get("experiments"), list) and not data["experiments"]:
        del data["experiments"]
    backup = _write(path, data, backup=True)
    return {"path": str(path), "backup": backup, "removed": _plain(ours[0]) if ours else None, "restored": restored}
