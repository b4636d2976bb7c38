"""Gray release on top of `ft ab-test`: guardrails that roll B back, a canary ramp, a promotion the agent follows.

The founding document's rule is never to swap a model in production directly. So B's share of the agent's traffic
ramps in steps (`--canary 10,50,100`), each held until its own check passes: enough of B's sessions at that step
(`--step-sessions`), no guardrail breached, the primary metric not worse. The guardrails (error rate, invalid tool-call
rate, share of slow requests) are tested B against A at every refresh by the same always-valid confidence sequences as
the primary metric (`abtest.check_guardrails`, `clawtune.loop.sequential`); a breach beyond its threshold rolls B
back at once: every request goes to A again. After the last step, with `--promote-if-better`, a B that the primary
metric calls better is promoted: the gateway serves it behind the agent's model id (and writes that into its
models.yaml, with a backup), and with `--register` OpenClaw's primary model becomes B through `clawtune openclaw
register`. `ft ab-test rollback ID` undoes a promotion (both files).

Every decision is taken by the gateway's admin API and recorded in its database with its figures (`experiment_events`):
the ramp's state lives there, not in this process, so a gateway restarted mid-ramp resumes at the step it was on, and
`ft ab-test resume ID` takes over a ramp whose driver was stopped. `clawtune serve` runs the guardrails as well
(`Watchdog`), so that a breach stops B when no command drives the test.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.loop.abtest import (
    GUARDRAILS,
    METRICS,
    ABTestError,
    AdminClient,
    GatewayUnreachable,
    Settings,
    _fmt,
    _interval,
    guardrail_reason,
)


@dataclass
class Action:
    """What the driver does next: step (the canary's next share), rollback, promote, or stop."""

    kind: str
    ended: str  # why the test ends: decided | duration | guardrail | primary | promoted | interrupted | ...
    reason: str
    step: int | None = None
    cause: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"step": self.step, "reason": self.reason, "figures": self.figures}


def parse_canary(text: str) -> list[float]:
    """'10,50,100' -> [10, 50, 100]: B's share at each step, in percent, rising; the first below 100."""
    try:
        steps = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ABTestError(f"--canary: {text!r} is not a list of percentages such as 10,50,100") from None
    if not steps or any(not 0 < x <= 100 or not math.isfinite(x) for x in steps):
        raise ABTestError(f"--canary: {text!r}: each step is a percentage above 0 and at most 100, e.g. 10,50,100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ABTestError(f"--canary: {text!r}: each step must give B more traffic than the one before")
    if steps[0] >= 100:
        raise ABTestError("--canary: the first step must be below 100 (B at 100% is the promotion)")
    return steps


def parse_guardrails(text: str) -> dict[str, float]:
    """'error_rate=0.01,slow_requests=0.05' -> thresholds (the worsening of B allowed, as a share); 'none' -> none.
    A name without a value takes its default."""
    if text.strip().lower() == "none":
        return {}
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        match = re.fullmatch(r"([a-z_]+)\s*(?:=\s*(\d+(?:\.\d+)?))?", part)
        if not match or match.group(1) not in GUARDRAILS:
            raise ABTestError(
                f"--guardrails: {part!r} is not NAME or NAME=THRESHOLD with NAME one of {', '.join(GUARDRAILS)} "
                "(or: none)"
            )
        value = float(match.group(2)) if match.group(2) is not None else GUARDRAILS[match.group(1)]
        if value >= 1:
            raise ABTestError(f"--guardrails: {part!r}: the threshold is a share of requests (0.01 is one point)")
        out[match.group(1)] = value
    return out


def next_action(
    experiment: dict[str, Any], result: dict[str, Any], settings: Settings, elapsed: float
) -> Action | None:
    """The decision this refresh calls for, in order: the experiment ended elsewhere; a guardrail's breach (rollback);
    a canary whose primary metric is worse (rollback); the canary's next step; the promotion; the verdict; the
    duration. None: keep going."""
    if experiment["status"] != "running":
        return Action("none", experiment["status"], f"the experiment is {experiment['status']} (ended elsewhere)")
    for name, guardrail in (result.get("guardrails") or {}).items():
        if guardrail["breached"]:
            figures = {"guardrail": {"metric": name, **guardrail}}
            return Action(
                "rollback", "guardrail", guardrail_reason(name, guardrail), cause="guardrail", figures=figures
            )
    canary = result.get("canary")
    verdict = result["verdict"]
    primary = result["tests"][result["primary"]]
    summary = {"primary": {"metric": result["primary"], "verdict": verdict, "test": primary}}
    if canary and verdict == "A better":
        reason = f"the primary metric ({result['primary']}) is worse on B: {result['reason']}"
        return Action("rollback", "primary", reason, cause="primary", figures=summary)
    steps = canary["steps"] if canary else None
    if canary and steps is not None:
        index = canary["step"]
        below = [s for s in steps if s < 100]
        if canary["sessions_b"] < settings.step_sessions:
            return _at_duration(result, settings, elapsed)
        check = {
            **summary,
            "sessions_b": canary["sessions_b"],
            "sessions_a": canary["sessions_a"],
            "guardrails": {
                n: {"breached": g["breached"], "threshold": g["threshold"]} for n, g in result["guardrails"].items()
            },
        }
        passed = (
            f"step {index + 1} ({steps[index]:g}%) passed: {canary['sessions_b']} sessions on B (of "
            f"{settings.step_sessions} needed), no guardrail breached, {result['primary']} not worse ({verdict})"
        )
        if index + 1 < len(below):
            reason = f"{passed}; B takes {below[index + 1]:g}%"
            return Action("step", "", reason, step=index + 1, figures=check)
        # the last step below 100: from here it ends as a test does, and 100% is the promotion
    if verdict == "B better" and settings.promote_if_better:
        return Action("promote", "promoted", f"B is better: {result['reason']}; promoted", figures=summary)
    if result["decided"] and not (canary and verdict == "not enough data"):
        reason = f"{verdict}: {result['reason']}"
        if settings.promote_if_better:
            reason += "; B is not better, so it is not promoted"
        elif verdict == "B better":
            reason += f"; `clawtune ft ab-test promote {experiment['id']}` promotes it"
        return Action("stop", "decided", reason, figures=summary)
    return _at_duration(result, settings, elapsed)


def _at_duration(result: dict[str, Any], settings: Settings, elapsed: float) -> Action | None:
    if elapsed < settings.duration_s:
        return None
    extra = "; B is not promoted" if settings.promote_if_better else ""
    return Action("stop", "duration", f"the duration is over ({result['verdict']}){extra}")


def act(
    client: AdminClient,
    experiment_id: str,
    action: Action,
    result: dict[str, Any],
    settings: Settings,
    endpoint: str,
    console: Any,
    sleep: Callable[[float], None] = time.sleep,
    wait_s: float = 5.0,
    patience_s: float = 600.0,
) -> dict[str, Any]:
    """Carry out the final decision on the gateway (recorded there with its figures); the experiment as it ends. A
    gateway that does not answer (restarting) is asked again every `wait_s` for `patience_s`: a rollback must land."""
    final_result = {**result, "ended": action.ended}
    path = f"/admin/experiments/{experiment_id}"

    def send() -> dict[str, Any]:
        if action.kind == "rollback":
            body = {"cause": action.cause, "reason": action.reason, "figures": action.figures, "result": final_result}
            return dict(client.call("POST", f"{path}/rollback", body))
        if action.kind == "promote":
            return promote(
                client, experiment_id, settings, endpoint, console, action.reason, action.figures, final_result
            )
        if action.kind == "none":
            return dict(client.call("GET", path))
        return dict(client.call("POST", f"{path}/stop", {"result": final_result, "reason": action.reason}))

    waited = 0.0
    while True:
        try:
            return send()
        except GatewayUnreachable as exc:
            if waited >= patience_s:
                verb = {"rollback": "rollback", "promote": "promote"}.get(action.kind, "status")
                raise ABTestError(
                    f"{exc}; the {action.kind} of {experiment_id} ({action.reason}) was not sent: run `clawtune ft "
                    f"ab-test {verb} {experiment_id}` once the gateway is back"
                ) from None
            console.print(f"{exc}: retrying the {action.kind}", highlight=False, markup=False)
            sleep(wait_s)
            waited += wait_s


def promote(
    client: AdminClient,
    experiment_id: str,
    settings: Settings,
    endpoint: str,
    console: Any,
    reason: str = "promoted by hand",
    figures: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The gateway serves B behind the agent's id (and its models.yaml says so); with `settings.register`, OpenClaw's
    primary model becomes B. The registration is recorded with the promotion so that a rollback can undo it."""
    path = f"/admin/experiments/{experiment_id}"
    register = None
    if settings.register is not None:
        register = {
            **settings.register,
            "model": settings.model_b,
            "previous": settings.agent_model or settings.model_a,
        }
    body = {"reason": reason, "figures": figures or {}, "register": register, "result": result}
    promoted = dict(client.call("POST", f"{path}/promote", body))
    config = (promoted.get("promotion") or {}).get("config")
    target = settings.agent_model or settings.model_a
    console.print(
        f"promoted: requests for {target!r} are served by {settings.model_b}"
        + (f"; {config['path']} updated (backup {config['backup']})" if config and config.get("backup") else ""),
        highlight=False,
        markup=False,
    )
    if register is not None:
        outcome = _register(register, settings.model_b, endpoint)
        console.print(f"OpenClaw: {outcome}", highlight=False, markup=False)
    return promoted


def _register(register: dict[str, Any], model: str, endpoint: str) -> str:
    """Make `model` the agent's primary in OpenClaw's config (`clawtune openclaw register`); what happened."""
    from clawtune.openclaw.register import Registration
    from clawtune.openclaw.register import register as apply_registration

    config = Path(register["config"]) if register.get("config") else None
    reg = Registration(model_id=model, endpoint=endpoint, agent=register.get("agent"), primary=True)
    done = apply_registration(reg, config)
    if not done.changed:
        return f"{done.path} already has {model} as the primary model"
    return f"{done.path}: primary model is now clawtune/{model}" + (f" (backup {done.backup})" if done.backup else "")


def rollback(
    endpoint: str, admin_key: str | None, experiment_id: str, reason: str | None, console: Any = None
) -> dict[str, Any]:
    """`ft ab-test rollback ID`: every request for the experiment's model back to A; a promotion undone, in the
    gateway, its models.yaml and (when the promotion registered B) OpenClaw's config."""
    from rich.console import Console

    console = console or Console()
    client = AdminClient(endpoint, admin_key)
    body = {"cause": "manual", "reason": reason or "rolled back by `clawtune ft ab-test rollback`"}
    undone = dict(client.call("POST", f"/admin/experiments/{experiment_id}/rollback", body))
    promotion = undone.get("promotion") or {}
    arms = list(undone["arms"])
    console.print(
        f"{experiment_id}: rolled back; requests for {undone.get('splits')!r} go to {arms[0]}", highlight=False
    )
    events = client.call("GET", f"/admin/experiments/{experiment_id}/events")["events"]
    last = events[-1] if events else {}
    config = (last.get("figures") or {}).get("config")
    if config and config.get("backup"):
        console.print(f"{config['path']}: the promotion's entry removed (backup {config['backup']})", highlight=False)
    register = promotion.get("register")
    if register:
        console.print(f"OpenClaw: {_register(register, register['previous'], endpoint)}", highlight=False)
    return undone


def promote_now(
    endpoint: str,
    admin_key: str | None,
    experiment_id: str,
    register: dict[str, Any] | None,
    console: Any = None,
    reason: str = "promoted by `clawtune ft ab-test promote`",
) -> dict[str, Any]:
    """`ft ab-test promote ID` (and the dashboard's Promote): promote B by hand (a running test, or one that ended:
    say, called B better)."""
    from rich.console import Console

    from clawtune.loop.abtest import stored_settings

    console = console or Console()
    client = AdminClient(endpoint, admin_key)
    experiment = client.call("GET", f"/admin/experiments/{experiment_id}")
    settings = stored_settings(experiment)
    settings.register = register
    return promote(client, experiment_id, settings, endpoint, console, reason)


# ---- the guardrails inside the gateway ---------------------------------------------------------------------------


class Watchdog:
    """The guardrails enforced in the gateway's own process, so that B is stopped on a breach even when no `ft ab-test`
    drives the experiment (its command was stopped, its machine went to sleep). Every `interval_s` it tests the
    guardrails of each running experiment that `ft ab-test` started (their thresholds are in its stored settings),
    exactly as the command does, and rolls back one that is breached; it never steps or promotes. `clawtune serve`
    sets it on the gateway (`Gateway.watchdog`: the statistics live in this layer, above the gateway's)."""

    def __init__(self, gateway: Any, interval_s: float = 10.0) -> None:
        import threading

        self.gateway = gateway
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """One round: the experiments rolled back."""
        from clawtune.loop.abtest import check_guardrails, labelled_units

        lab = self.gateway.lab
        rolled = []
        for experiment in list(lab.all.values()):
            raw = experiment.settings or {}
            if not experiment.running or not raw.get("guardrails") or not raw.get("model_b"):
                continue
            settings = Settings.from_dict(raw)
            self.gateway.log.flush(10)  # what has been answered is counted
            units = labelled_units(lab.units(experiment.id), settings)
            breached = [(n, g) for n, g in check_guardrails(units, settings).items() if g["breached"]]
            if not breached:
                continue
            name, guardrail = breached[0]
            reason = f"{guardrail_reason(name, guardrail)} (found by the gateway's watchdog)"
            figures = {"guardrail": {"metric": name, **guardrail}, "by": "gateway"}
            lab.rollback(experiment.id, {"cause": "guardrail", "reason": reason, "figures": figures})
            rolled.append(experiment.id)
        return rolled

    def _run(self) -> None:
        import logging

        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a round that fails is logged; the next one tries again
                logging.getLogger("clawtune.serve").exception("the guardrail watchdog's check failed")

    def start(self) -> None:
        import threading

        self._thread = threading.Thread(target=self._run, name="clawtune-guardrails", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


# ---- display ----------------------------------------------------------------------------------------------------


def step_label(experiment: dict[str, Any]) -> str:
    """'step 2 of 3: B 50%' for a canary, '—' for a fixed split."""
    canary = experiment.get("canary")
    if not canary:
        return "—"
    steps, step = canary["steps"], canary["step"]
    if step >= len(steps) or experiment.get("status") == "promoted":
        return f"promoted after {len(steps)} steps"
    at = f"step {step + 1} of {len(steps)}: B {steps[step]:g}%"
    if experiment.get("status") == "running":
        return at
    return f"ended at {at}"


def guardrail_table(guardrails: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="guardrails: B - A, always-valid 95% confidence sequences", title_justify="left")
    for column in ("guardrail", "A", "B", "B - A [interval]", "allowed", "state"):
        table.add_column(column, justify="left" if column in ("guardrail", "state") else "right")
    for name, g in guardrails.items():
        test = g["test"]
        label = METRICS[name].label.replace("--slow-ms", f"{g.get('slow_ms', 0):,.0f} ms")
        table.add_row(
            label,
            _fmt(test.get("mean_a"), "share"),
            _fmt(test.get("mean_b"), "share"),
            _interval(test, "share"),
            _fmt(g["threshold"], "share", True),
            "[bold red]breached[/]" if g["breached"] else "ok",
        )
    return table


def events_table(events: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="decisions", title_justify="left")
    for column in ("time", "decision", "arms after", "why"):
        table.add_column(column)
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["created"]))
        arms = ", ".join(f"{k} {v:g}" for k, v in (e.get("arms") or {}).items())
        table.add_row(when, e["kind"], arms, e.get("reason") or "")
    return table
