"""`clawtune ui` in a real headless Chromium (Debian's, driven by Playwright): every view's key numbers against the
files and the log they come from, a correction saved into review.jsonl, experiments stopped, promoted and rolled back
through the gateway with the decisions it recorded on the page, chart screenshots that are not blank. The fixture writes small outputs with the project's own writers (a real
export and augmentation of the sample agent, manifests and summaries, an evaluation report, requests through a real
gateway whose log has an archive) instead of running the demo."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawtune.artifacts.files import write_json_atomic
from clawtune.artifacts.manifest import write_manifest
from clawtune.evaluate.report import write_reports
from clawtune.serve.app import Gateway, Server
from clawtune.serve.log import RequestLog, iter_requests, log_files
from clawtune.ui.app import UISettings, mount

from ..conftest import chromium, copy_sample, missing
from ..serve_fakes import ScriptedEngine, config

KEY = "admin-secret-key"
try:
    from playwright import sync_api
except ImportError:  # a dev dependency: missing only where `make install` was not run
    missing("playwright is not installed")


# ---- the outputs the commands write, made small -------------------------------------------------------------------


def write_run(folder: Path, losses: list[float], evals: list[float], finished: bool) -> None:
    """A training run as `ft train` leaves it: checkpoint-N folders with manifests (and trainer state), and once
    finished the summary and the manifest at the top."""
    manifest = {"kind": "lora", "base_model": "clawtune/tiny-agent", "config": {"data": {"train": "ft-data/raw.jsonl"}}}
    log_history = [{"step": 2 * (i + 1), "loss": v} for i, v in enumerate(losses)]
    log_history += [{"step": 4 * (i + 1), "eval_loss": v} for i, v in enumerate(evals)]
    for step in (4, 2 * len(losses)):
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
        state = {"global_step": step, "log_history": [e for e in log_history if e["step"] <= step]}
        (checkpoint / "trainer_state.json").write_text(json.dumps(state))
        write_manifest(checkpoint, {**manifest, "step": step, "step_offset": 0})
    if finished:
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        write_manifest(folder, {**manifest, "step": 2 * len(losses), "step_offset": 0})
        summary = {
            "base_model": "clawtune/tiny-agent",
            "method": "lora",
            "steps": 2 * len(losses),
            "final_train_loss": sum(losses) / len(losses),
            "losses": [{"step": 2 * (i + 1), "loss": v} for i, v in enumerate(losses)],
            "eval_losses": [{"step": 4 * (i + 1), "loss": v} for i, v in enumerate(evals)],
        }
        write_json_atomic(folder / "training-summary.json", summary)


def rate(value: float, n: int) -> dict[str, Any]:
    return {"value": value, "ci": [max(value - 0.1, 0), min(value + 0.1, 1)], "n": n}


def summary_of(name: str, accuracy: float) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "local",
        "items": 10,
        "accuracy": rate(accuracy, 10),
        "per_category": {"tool-call": rate(accuracy, 6), "normal": rate(accuracy, 4)},
        "f1": {"value": accuracy, "ci": None, "n": 10},
        "tool_call_accuracy": rate(accuracy, 6),
        "latency_p50_s": 0.2,
        "latency_p95_s": 0.4,
        "prompt_tokens_per_request": 120.0,
        "completion_tokens_per_request": 20.0,
        "general_accuracy": rate(0.5, 8),
        "errors": 0,
    }


def write_evaluation(folder: Path) -> dict[str, Any]:
    """`ft evaluate`'s report on ten turns: per-item results made by evaluate's own functions from scored sides."""
    from clawtune.evaluate.backends import Generation, Item
    from clawtune.evaluate.metrics import Score
    from clawtune.evaluate.run import Side, per_item, worst_failures

    items, base, tuned = [], Side("baseline", "clawtune/tiny-agent", "local"), Side("fine-tuned", "ckpt", "local")
    for i in range(10):
        tool = ("get_weather" if i % 4 == 1 else "query_db") if i % 2 else None
        call = {"id": "c", "type": "function", "function": {"name": tool, "arguments": "{}"}}
        reference = {"role": "assistant", "tool_calls": [call]} if tool else {"role": "assistant", "content": "ok"}
        prompt = [{"role": "user", "content": f"question {i}"}]
        items.append(Item(f"item-{i}", "tool-call" if tool else "normal", prompt, None, reference))
        for side, right in ((base, i < 3), (tuned, i < 7)):
            side.scores.append(
                Score("tool_call" if tool else "text", right, 1.0 if right else 0.0, None if right else "wrong")
            )
            side.generations.append(Generation({"role": "assistant", "content": "ok" if right else "no"}, ""))
    report = {
        "test_set": "ft-data/test.jsonl",
        "items": 10,
        "metrics": ["accuracy", "tool_calls", "latency", "forgetting"],
        "baseline": summary_of("clawtune/tiny-agent", 0.3),
        "fine_tuned": summary_of("runs/finished/checkpoint-8", 0.7),
        "comparison": {"verdict": "the fine-tuned model is more accurate (McNemar p = 0.031)", "significant": True},
        "worst_failures": worst_failures(items, base, tuned),
        "per_item": per_item(items, base, tuned),
        "forgetting": {
            "general_items": 8,
            "before": 0.5,
            "after": 0.5,
            "drop": 0.0,
            "threshold": 0.05,
            "flagged": False,
        },
        "overlap": None,
    }
    write_reports(report, folder)
    return report


def write_review(folder: Path) -> None:
    folder.mkdir(parents=True)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    lines = [
        {
            "failure_id": f"f-{i:016x}",
            "location": f"log#req-{i}",
            "signals": [{"type": "tool_error", "tool": "get_weather"}],
            "messages": [
                {"role": "system", "content": "You are an agent."},
                {"role": "user", "content": f"What is the weather in city {i}?"},
                {"role": "assistant", "content": "I cannot tell.", "weight": 0},
            ],
            "tools": tools,
            "correction": None,
            "note": "Write the right answer in `correction`.",
        }
        for i in range(2)
    ]
    (folder / "review.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    (folder / "failures-report.json").write_text(json.dumps({"agent_id": "my-agent", "failures": 2}))


def write_archive(data: Path) -> None:
    """Old requests written by the log's own writer, past its row cap: the oldest move to a monthly archive."""
    log = RequestLog(data / "requests.sqlite", max_rows=100)
    start = time.time() - 3 * 86400
    for i in range(120):
        log.request(
            {
                "id": f"old-{i:03d}",
                "created": start + i * 600,
                "model": "general",
                "requested_model": "general",
                "status": 200,
                "latency_ms": 50.0 + i,
                "prompt_tokens": 100,
                "prompt_tokens_original": 130,
                "completion_tokens": 10,
                "request_json": {"messages": [{"role": "user", "content": f"old question {i}"}]},
                "response_json": {"choices": [{"message": {"role": "assistant", "content": f"old answer {i}"}}]},
            }
        )
    log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Iterator[dict[str, Any]]:
    from clawtune.cli import main

    root = tmp_path_factory.mktemp("ui")
    write_run(root / "runs" / "finished", [2.0, 1.5, 1.2, 0.9], [1.8, 1.1], finished=True)
    write_run(root / "runs" / "going", [2.2, 1.9, 1.7], [], finished=False)
    data = root / "ft-data"
    copy_sample(data, sample_data)
    augmented = ["ft", "augment-data", "--input", str(data / "raw.jsonl"), "--output", str(data / "augmented.jsonl")]
    assert main([*augmented, "--factor", "2", "--balance"]) == 0
    evaluation = write_evaluation(root / "runs" / "finished" / "checkpoint-8" / "eval")
    write_review(root / "failures")
    (root / "broken" / "eval").mkdir(parents=True)
    (root / "broken" / "eval" / "eval-report.json").write_text('{"baseline": ')  # a report cut short
    write_archive(root / "serve-data")
    settings = config(root, server={"admin_keys": [KEY], "data_dir": str(root / "serve-data"), "log_max_rows": 100})
    server = Server(Gateway(settings, engine=ScriptedEngine())).start()  # type: ignore[arg-type]
    ui = UISettings(root, server.gateway.log.path, [KEY], endpoint=server.url)
    mount(server.app, ui)  # as `clawtune serve` does
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(12):
                model = "finance-ab" if i % 3 == 0 else "general"
                reply = client.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": f"new question {i}"}]},
                    headers={"X-Clawtune-Session": f"s{i}"},
                )
                assert reply.status_code == 200
                if i < 3:
                    rating = {"request_id": reply.json()["id"], "rating": "positive" if i else "negative"}
                    assert client.post("/v1/feedback", json=rating).status_code == 200
        server.gateway.log.flush()
        lab = server.gateway.lab
        for k, (low, high) in enumerate([(-0.5, 0.6), (-0.3, 0.4), (-0.1, 0.2)]):
            figures: dict[str, Any] = {"primary": "user_satisfaction", "verdict": "not enough data", "tests": {}}
            test = {"estimate": (low + high) / 2, "lower": low, "upper": high, "mean_a": 0.5, "mean_b": 0.55}
            figures["tests"]["user_satisfaction"] = {**test, "p_value": 0.5 - 0.1 * k}
            lab.store.add_refresh("finance-ab", figures, time.time() - 300 + 60 * k)
        # the last refresh as `ft ab-test` stores it: its own analysis of the experiment's units in the log
        from clawtune.loop.abtest import Settings, analyse

        experiment = lab.get("finance-ab").public()
        settings_ab = Settings("finance", "finance-v2", (70, 30), ["user_satisfaction", "latency"], "user_satisfaction")
        lab.store.add_refresh("finance-ab", analyse(experiment, lab.units("finance-ab"), settings_ab))
        yield {"root": root, "server": server, "ui": ui, "evaluation": evaluation, "data": data}
    finally:
        server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Any, world: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.goto(world["server"].url + "/ui/")
    tab.fill("#key", KEY)
    tab.click("#login button")
    tab.wait_for_selector("#view[data-ready=runs]")
    yield tab
    context.close()


def show(page: Any, name: str) -> None:
    page.evaluate(
        """name => {
            document.getElementById('view').dataset.ready = '';
            if (location.hash === '#' + name) window.dispatchEvent(new HashChangeEvent('hashchange'));
            else location.hash = name;
        }""",
        name,
    )
    page.wait_for_selector(f"#view[data-ready={name}]")


def keep_screenshot(page: Any, name: str, top: str | None = None) -> None:
    """With CLAWTUNE_UI_SCREENSHOTS=DIR, the view as the README shows it (docs/ui/ is made this way), from the top
    or from the element `top`."""
    folder = os.environ.get("CLAWTUNE_UI_SCREENSHOTS")
    if folder:
        page.evaluate("top => top ? document.querySelector(top).scrollIntoView() : window.scrollTo(0, 0)", top)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def not_blank(page: Any, selector: str, stroke: tuple[int, int, int] = (0x25, 0x63, 0xEB)) -> None:
    """The chart's drawing area holds a drawn series: enough pixels of the first series' colour (axes and grid are
    grey and black, so they do not count), not one background."""
    from PIL import Image

    canvas = page.locator(f"{selector} canvas")
    canvas.wait_for()
    image = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    near = sum(
        count
        for count, rgb in image.getcolors(1 << 20) or []
        if sum(abs(a - b) for a, b in zip(rgb, stroke, strict=True)) < 60
    )
    assert near > 100, f"{selector}: {near} pixels of the series' colour: nothing drawn"


# ---- the views ------------------------------------------------------------------------------------------------------


def test_the_key_is_asked_once_and_checked_server_side(world: dict[str, Any], browser: Any) -> None:
    url = world["server"].url + "/ui"
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/api/runs").status_code == 401  # every data endpoint, without the cookie
        assert client.get("/api/requests").status_code == 401
        bad = client.post("/api/login", json={"key": "wrong"})
        assert bad.status_code == 401 and "clawtune_ui" not in bad.cookies
        assert client.post("/api/login", content=f'{{"key": "{KEY}"}}').status_code == 415  # a form cannot send it
        good = client.post("/api/login", json={"key": KEY})
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert KEY.lower() not in cookie  # the browser holds a session token, not the key
        assert client.get("/api/runs").status_code == 200
        client.post("/api/logout", json={})
        assert client.get("/api/runs").status_code == 401
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(url + "/")
    tab.fill("#key", "nope")
    tab.click("#login button")
    tab.locator("#login-error", has_text="not an admin key").wait_for()
    context.close()


def test_runs_view_lists_runs_and_draws_ticked_loss_curves(page: Any, world: dict[str, Any], tmp_path: Path) -> None:
    show(page, "runs")
    rows = page.locator("#runs-table tr[data-run]")
    assert rows.count() == 2
    finished = page.locator('tr[data-run="runs/finished"]')
    summary = json.loads((world["root"] / "runs" / "finished" / "training-summary.json").read_text())
    assert finished.locator(".steps").inner_text() == str(summary["steps"])
    assert finished.locator(".last-loss").inner_text() == f"{summary['losses'][-1]['loss']:.4f}"
    assert finished.locator(".checkpoints").inner_text() == "2"
    going = page.locator('tr[data-run="runs/going"]')  # no summary yet: the newest checkpoint's trainer state
    assert going.locator(".last-loss").inner_text() == "1.7000" and "running" in going.inner_text()
    not_blank(page, "#chart-runs")
    legend = page.locator("#chart-runs .u-legend").inner_text()
    assert "runs/finished train" in legend and "runs/finished validation" in legend and "runs/going train" in legend
    keep_screenshot(page, "runs")
    finished.locator("a").click()
    assert '"base_model": "clawtune/tiny-agent"' in page.locator("#run-detail .manifest").inner_text()
    page.locator("#run-detail .run-evals a", has_text="checkpoint-8/eval/eval-report.json").click()  # its evaluations
    page.wait_for_selector("#view[data-ready=evaluations]")
    assert page.locator("#eval-pick").input_value() == "runs/finished/checkpoint-8/eval/eval-report.json"


def test_data_view_shows_the_export_and_augmentation_reports(page: Any, world: dict[str, Any]) -> None:
    show(page, "data")
    data = world["data"]
    export = json.loads((data / "export-report.json").read_text())
    augment = json.loads((data / "augmented-report.json").read_text())
    card = page.locator('.data-report[data-kind="export"]')
    assert card.locator(".examples").inner_text() == str(export["examples_written"])
    raw_lines = sum(1 for line in (data / "raw.jsonl").read_text().splitlines() if line.strip())
    mix = card.locator("table.mix tr[data-category] .count").all_inner_texts()
    assert sum(int(x) for x in mix) == raw_lines  # the training file's mix, counted from the file
    aug = page.locator('.data-report[data-kind="augment"]')
    assert aug.locator(".examples").inner_text() == str(augment["examples_out"])
    keep_screenshot(page, "data")


def test_evaluations_view_shows_the_table_the_forgetting_check_and_filters_items(
    page: Any, world: dict[str, Any]
) -> None:
    show(page, "evaluations")
    report = world["evaluation"]
    assert page.locator("#verdict").inner_text() == report["comparison"]["verdict"]
    accuracy = page.locator('#eval-table tr[data-metric="accuracy"]')
    assert accuracy.locator(".baseline").inner_text().startswith("30.0%")
    assert accuracy.locator(".fine-tuned").inner_text().startswith("70.0%")
    assert "no forgetting flagged" in page.locator("#forgetting").inner_text()
    assert "broken/eval/eval-report.json: not JSON" in page.locator(".problems").inner_text()
    tools = page.locator('#eval-categories tr[data-category="tool-call"]').inner_text().split("\t")
    assert tools[1:] == ["6", "30.0%", "70.0%"]
    assert page.locator("#eval-items tr.item").count() == 10  # every held-out turn
    keep_screenshot(page, "evaluations", ".toolbar")
    page.select_option("#filter-verdict", "fine-tuned only")
    assert page.locator("#eval-items tr.item").count() == 4  # items 3-6: wrong before, right after
    page.select_option("#filter-verdict", "")
    page.select_option("#filter-category", "tool-call")
    assert page.locator("#items-shown").inner_text() == "5 of 10"
    page.select_option("#filter-tool", "get_weather")
    assert page.locator("#eval-items tr.item td:first-child").all_inner_texts() == ["item-1", "item-5", "item-9"]


def test_traffic_view_counts_the_log_and_its_archive_and_opens_a_request(
    page: Any, world: dict[str, Any], tmp_path: Path
) -> None:
    log = world["server"].gateway.log.path
    assert len(log_files(log)) == 2  # the live log and its monthly archive
    rows = list(iter_requests(log))
    show(page, "traffic")
    assert page.locator("#traffic-total").inner_text() == str(len(rows))
    saved = sum(
        max((r["prompt_tokens_original"] or 0) - (r["prompt_tokens"] or 0), 0) for r in rows if r["prompt_tokens"]
    )
    assert page.locator("#traffic-saved").inner_text().replace(",", "") == str(saved)
    positive = sum(f["rating"] == "positive" for r in rows for f in r["feedback"])
    negative = sum(f["rating"] == "negative" for r in rows for f in r["feedback"])
    assert page.locator("#traffic-feedback").inner_text() == f"{positive} / {negative}"
    general = sum(r["model"] == "general" for r in rows)
    assert page.locator('#traffic-models tr[data-model="general"] .requests').inner_text() == str(general)
    not_blank(page, "#chart-traffic")
    not_blank(page, "#chart-latency")
    page.wait_for_selector("#requests tr.request-row")
    keep_screenshot(page, "traffic")
    page.select_option("#traffic-group", "arm")
    assert "finance-ab" in page.locator("#chart-traffic .u-legend").inner_text()
    # the paged list: 50 a page over both files, searchable, a row opens the request and its answer
    page.wait_for_selector("#requests tr.request-row")
    assert page.locator("#request-pager").inner_text() == f"1–50 of {len(rows)}"
    page.fill("#request-search", "old question 7")  # 7, 70-79: all in the archive or the oldest live rows
    page.locator("#request-pager", has_text="1–11 of 11").wait_for()
    page.fill("#request-search", "old question 3")
    page.locator('#requests tr[data-id="old-030"]').wait_for()
    assert page.locator("#request-pager").inner_text() == "1–11 of 11"
    page.fill("#request-search", "")
    page.select_option("#request-model", "finance")
    finance = sum(r["model"] == "finance" or r["requested_model"] == "finance" for r in rows)
    page.locator("#request-pager", has_text=f"1–{finance} of {finance}").wait_for()
    page.select_option("#request-model", "")
    page.fill("#request-search", "old question 3")
    page.locator('#requests tr[data-id="old-030"]').wait_for()
    page.locator('#requests tr[data-id="old-003"]').click()
    detail = page.locator("#request-detail")
    detail.locator("text=old answer 3").wait_for()
    assert "requests-" in detail.inner_text()  # it came from the archive


def test_experiments_view_draws_the_confidence_sequence_and_stops_through_the_gateway(
    page: Any, world: dict[str, Any]
) -> None:
    show(page, "experiments")
    card = page.locator('.experiment[data-id="finance-ab"]')
    assert card.locator(".status").inner_text() == "running"
    units = world["server"].gateway.lab.units("finance-ab")
    for arm, model in (("A", "finance"), ("B", "finance-v2")):
        row = card.locator(f'.arms tr[data-arm="{arm}"]').inner_text().split("\t")
        mine = [u for u in units if u["arm"] == model]
        assert row[:4] == [arm, model, str(len(mine)), str(sum(u["requests"] for u in mine))]
    assert card.locator('.tests tr[data-metric="user_satisfaction"]').count() == 1  # every metric's test
    assert "verdict on user_satisfaction: not enough data" in card.inner_text()
    not_blank(page, '.cs-chart[data-experiment="finance-ab"]')
    keep_screenshot(page, "experiments")
    page.once("dialog", lambda dialog: dialog.accept())
    card.locator("button.stop").click()
    card.locator(".status", has_text="stopped").wait_for()
    assert world["server"].gateway.lab.get("finance-ab").status == "stopped"  # the running gateway stopped it
    assert world["server"].gateway.lab.store.get("finance-ab")["status"] == "stopped"


def test_experiments_view_shows_a_canary_rolled_back_by_its_guardrail_with_its_reasons(
    page: Any, world: dict[str, Any]
) -> None:
    """A canary driven through the gateway's admin API by the canary's own code (`ft ab-test --canary`'s actions):
    start at 10%, step to 50%, a guardrail's breach rolls it back. Each decision is on the page with its reason."""
    from clawtune.loop.abtest import AdminClient, guardrail_reason
    from clawtune.loop.canary import Action

    client = AdminClient(world["server"].url, KEY)
    arms = {"finance": 50, "finance-v2": 50}
    client.call("POST", "/admin/experiments", {"id": "canary-rb", "arms": arms, "canary": {"steps": [10, 50, 100]}})
    passed = "step 1 (10%) passed: 4 sessions on B (of 4 needed), no guardrail breached; B takes 50%"
    client.call("POST", "/admin/experiments/canary-rb/step", Action("step", "", passed, step=1).body())
    test = {"estimate": 0.3, "lower": 0.12, "upper": 0.48, "mean_a": 0.0, "mean_b": 0.3, "n_a": 6, "n_b": 5}
    guardrail = {"threshold": 0.01, "breached": True, "test": test}
    breach = guardrail_reason("error_rate", guardrail)
    figures = {"guardrail": {"metric": "error_rate", **guardrail}}
    body = {"cause": "guardrail", "reason": breach, "figures": figures}
    client.call("POST", "/admin/experiments/canary-rb/rollback", body)

    show(page, "experiments")
    card = page.locator('.experiment[data-id="canary-rb"]')
    assert card.locator(".status").inner_text() == "rolled_back"
    assert card.locator("button").count() == 0  # a rolled-back test is neither stopped, promoted nor rolled back
    assert "step 2 of 3, B 50%" in card.locator(".canary").inner_text()
    rows = card.locator("table.events tr[data-kind]")
    assert [rows.nth(i).get_attribute("data-kind") for i in range(rows.count())] == ["start", "step", "rollback"]
    start, step, rollback = (rows.nth(i).inner_text().split("\t") for i in range(3))
    assert start[2:4] == ["finance 90, finance-v2 10", "B takes 10% (canary step 1 of 3)"]
    assert step[2:4] == ["finance 50, finance-v2 50", passed]
    assert rollback[2] == "finance 50, finance-v2 50" and rollback[3] == breach
    assert "guardrail error_rate" in breach and "worse by more than" in breach
    assert (
        "cause: guardrail" in rollback[4]
        and "error_rate: B − A +30.0 [+12.0, +48.0] pts, allowed +1.0 pts, breached" in rollback[4]
    )
    # the figures as stored, behind "all figures"
    assert (
        json.loads(card.locator('tr[data-kind="rollback"] details pre').text_content())["guardrail"]
        == figures["guardrail"]
    )
    keep_screenshot(page, "experiments-decisions", '.experiment[data-id="canary-rb"]')


def test_experiments_view_promotes_and_rolls_back_through_the_gateway(page: Any, world: dict[str, Any]) -> None:
    from clawtune.loop.abtest import AdminClient

    client = AdminClient(world["server"].url, KEY)
    client.call("POST", "/admin/experiments", {"id": "promote-me", "arms": {"finance": 80, "finance-v2": 20}})
    lab = world["server"].gateway.lab
    show(page, "experiments")
    card = page.locator('.experiment[data-id="promote-me"]')
    assert card.locator(".status").inner_text() == "running"
    assert card.locator("button.stop").count() == card.locator("button.rollback").count() == 1

    page.once("dialog", lambda dialog: dialog.accept())
    card.locator("button.promote").click()
    card.locator(".status", has_text="promoted").wait_for()
    assert lab.get("promote-me").status == "promoted" and lab.get("promote-me").arms == {"finance-v2": 100.0}
    assert lab.store.get("promote-me")["status"] == "promoted"  # in the gateway's database
    assert "promoted through the gateway" in card.locator(".action-note").inner_text()
    promoted = card.locator('tr[data-kind="promote"]').inner_text()
    assert "promoted from the dashboard (clawtune ui)" in promoted
    assert "requests for promote-me are served by finance-v2" in card.locator(".promotion").inner_text()
    assert card.locator("button.promote").count() == card.locator("button.stop").count() == 0

    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first: a dismissed question changes nothing
    card.locator("button.rollback").click()
    assert lab.get("promote-me").status == "promoted"
    page.once("dialog", lambda dialog: dialog.accept())
    card.locator("button.rollback").click()
    card.locator(".status", has_text="rolled_back").wait_for()
    assert lab.get("promote-me").status == "rolled_back" and lab.get("promote-me").arms == {
        "finance": 80,
        "finance-v2": 20,
    }
    events = client.call("GET", "/admin/experiments/promote-me/events")["events"]
    assert [e["kind"] for e in events] == ["start", "promote", "rollback"]
    assert events[-1]["reason"] == "rolled back from the dashboard (clawtune ui)"
    assert card.locator('tr[data-kind="rollback"]').count() == 1
    assert card.locator("button").count() == 0


def test_experiment_actions_are_checked_server_side(world: dict[str, Any]) -> None:
    from clawtune.loop.abtest import AdminClient

    AdminClient(world["server"].url, KEY).call(
        "POST", "/admin/experiments", {"id": "guarded", "arms": {"finance": 50, "finance-v2": 50}}
    )
    url = world["server"].url + "/ui"
    with httpx.Client(base_url=url, timeout=10) as client:
        for verb in ("stop", "promote", "rollback"):
            assert client.post(f"/api/experiments/guarded/{verb}", json={}).status_code == 401  # no session
        assert client.post("/api/login", json={"key": KEY}).status_code == 200
        for verb in ("promote", "rollback"):
            path = f"/api/experiments/guarded/{verb}"
            assert client.post(path, content=b"{}").status_code == 415  # a cross-site form cannot send JSON
            assert client.post(path, json={"reason": 5}).status_code == 400
            assert client.post(path, json=["x"]).status_code == 400
            assert client.post(f"/api/experiments/..%2F..%2Fmodels/{verb}", json={}).status_code in (400, 404)
            missing = client.post(f"/api/experiments/nope/{verb}", json={})
            assert missing.status_code == 502 and "no experiment named 'nope'" in missing.json()["error"]
    assert world["server"].gateway.lab.get("guarded").status == "running"  # nothing above changed it
    assert [e["kind"] for e in world["server"].gateway.lab.events("guarded")] == ["start"]


def test_the_pages_promote_leaves_openclaw_alone_and_its_rollback_undoes_a_registered_promotion(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Promote from the page changes the gateway, not OpenClaw's config; Roll back from the page undoes a promotion
    that `ft ab-test promote ID --register` made, OpenClaw's primary model included (as `ft ab-test rollback`)."""
    from rich.console import Console

    from clawtune.loop.abtest import AdminClient
    from clawtune.loop.canary import promote_now
    from clawtune.openclaw import json5

    openclaw = tmp_path / "openclaw.json"
    openclaw.write_text('{\n  // my agent\n  agents: { defaults: { model: "clawtune/finance" } },\n}\n')
    before = openclaw.read_text()
    admin = AdminClient(world["server"].url, KEY)
    lab = world["server"].gateway.lab
    for name in ("by-page", "by-command"):
        admin.call("POST", "/admin/experiments", {"id": name, "arms": {"finance": 50, "finance-v2": 50}})
    with httpx.Client(base_url=world["server"].url + "/ui", timeout=30) as client:
        assert client.post("/api/login", json={"key": KEY}).status_code == 200
        promoted = client.post("/api/experiments/by-page/promote", json={})
        assert promoted.status_code == 200 and promoted.json()["status"] == "promoted"
        assert "promoted: requests for 'finance' are served by finance-v2" in promoted.json()["said"]
        assert lab.get("by-page").status == "promoted" and openclaw.read_text() == before

        registration = {"config": str(openclaw), "agent": None}
        promote_now(world["server"].url, KEY, "by-command", registration, Console(file=io.StringIO()))
        primary = json5.loads(openclaw.read_text())["agents"]["defaults"]["model"]
        assert primary["primary"] == "clawtune/finance-v2"
        undone = client.post("/api/experiments/by-command/rollback", json={"reason": "B answers too long"})
        assert undone.status_code == 200 and undone.json()["status"] == "rolled_back", undone.text
        assert "OpenClaw:" in undone.json()["said"]
    primary = json5.loads(openclaw.read_text())["agents"]["defaults"]["model"]
    assert primary["primary"] == "clawtune/finance" and "// my agent" in openclaw.read_text()
    assert lab.get("by-command").status == "rolled_back"
    last = lab.events("by-command")[-1]
    assert (
        last["kind"] == "rollback" and last["reason"] == "B answers too long" and last["figures"]["cause"] == "manual"
    )

    # OpenClaw's config broken meanwhile: the gateway still rolls back, and the page says what was left undone
    admin.call("POST", "/admin/experiments", {"id": "broken-config", "arms": {"finance": 50, "finance-v2": 50}})
    promote_now(world["server"].url, KEY, "broken-config", registration, Console(file=io.StringIO()))
    openclaw.write_text("{ agents: ")
    with httpx.Client(base_url=world["server"].url + "/ui", timeout=30) as client:
        assert client.post("/api/login", json={"key": KEY}).status_code == 200
        half = client.post("/api/experiments/broken-config/rollback", json={})
    assert half.status_code == 409 and "OpenClaw's primary model was not set back" in half.json()["error"]
    assert str(openclaw) in half.json()["error"] and lab.get("broken-config").status == "rolled_back"


def test_failures_inbox_saves_a_correction_into_review_jsonl(page: Any, world: dict[str, Any]) -> None:
    from clawtune.loop.failures.collect import check_correction

    review = world["root"] / "failures" / "review.jsonl"
    before = review.read_text().splitlines()
    show(page, "failures")
    item = page.locator('.failure[data-failure="f-0000000000000001"]')
    assert "What is the weather in city 1?" in item.inner_text()
    item.locator("textarea").fill('[{"role": "assistant", "content": "x", "tool_calls": "bad"}]')
    item.locator("button.save").click()
    item.locator(".saved-note.error").wait_for()  # refused, with the command's own reasons; nothing written
    assert review.read_text().splitlines() == before
    item.locator("textarea").fill("It is sunny in city 1.")
    item.locator("button.save").click()
    item.locator(".saved-note.good").wait_for()
    keep_screenshot(page, "failures")
    after = review.read_text().splitlines()
    assert after[0] == before[0]  # the other line, byte for byte
    saved = json.loads(after[1])
    assert (
        saved["correction"] == "It is sunny in city 1." and check_correction(saved["correction"], saved["tools"]) == []
    )


def test_empty_states_say_what_to_run(browser: Any, tmp_path: Path) -> None:
    import uvicorn

    from clawtune.serve.app import bind
    from clawtune.ui.app import standalone

    settings = UISettings(tmp_path, tmp_path / "clawtune-data" / "requests.sqlite", [KEY])
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(standalone(settings, ["127.0.0.1"]), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        context = browser.new_context()
        tab = context.new_page()
        tab.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        tab.fill("#key", KEY)
        tab.click("#login button")
        expected = {
            "runs": "clawtune ft train",
            "data": "clawtune agent export-training-data",
            "evaluations": "clawtune ft evaluate",
            "traffic": "clawtune serve",
            "experiments": "clawtune ft ab-test",
            "failures": "clawtune agent collect-failures",
        }
        tab.wait_for_selector("#view[data-ready=runs]")
        for name, command in expected.items():
            show(tab, name)
            assert command in tab.locator("[data-empty]").first.inner_text()
        assert not (tmp_path / "clawtune-data").exists()  # reading an absent log creates nothing
        context.close()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# ---- the commands -----------------------------------------------------------------------------------------------------


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """Start a clawtune command; return the process and its first lines (up to the one naming /ui/)."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "clawtune.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines = ""
    deadline = time.time() + 60
    assert process.stdout is not None
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines += line
        if "/ui/" in line:
            lines += process.stdout.readline() if "clawtune ui on" in line else ""
            return process, lines
    process.kill()
    raise AssertionError(f"no dashboard address in the output:\n{lines}")


def _url(lines: str) -> str:
    import re

    found = re.search(r"(http://[^ ]+/ui/)", lines)
    assert found, lines
    return found.group(1)


def test_clawtune_ui_serves_on_loopback_with_a_key_it_prints_once(world: dict[str, Any], tmp_path: Path) -> None:
    env = {"CLAWTUNE_ADMIN_KEY": ""}
    process, lines = _start(
        ["ui", "--runs", str(world["root"]), "--log", str(world["root"] / "serve-data"), "--port", "0"], tmp_path, env
    )
    try:
        url = _url(lines)
        assert url.startswith("http://127.0.0.1:")
        key = lines.split("admin key for this session: ")[1].split()[0]
        with httpx.Client(timeout=10) as client:
            assert "clawtune" in client.get(url).text
            assert "script-src 'self'" in client.get(url).headers["content-security-policy"]
            assert client.get(url + "api/runs").status_code == 401
            assert client.post(url + "api/login", json={"key": key}).status_code == 200
            runs = client.get(url + "api/runs").json()
            assert {r["id"] for r in runs} == {"runs/finished", "runs/going"}
            assert client.get(url + "api/traffic").json()["requests"] > 100  # the log folder given by --log
            hostile = client.get(url + "api/runs", headers={"Host": "evil.example"})
            assert hostile.status_code == 400  # DNS rebinding: only loopback names are answered
        assert not list(tmp_path.iterdir())  # nothing written where it ran
    finally:
        process.terminate()
        process.wait(10)


def test_clawtune_serve_mounts_the_dashboard(tmp_path: Path) -> None:
    import yaml

    models = {
        "models": [{"id": "remote", "provider": "openai", "endpoint": "http://127.0.0.1:9/v1", "model": "m"}],
        "server": {"port": 0, "admin_keys": [KEY], "data_dir": str(tmp_path / "data")},
    }
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(models))
    process, lines = _start(["serve", "--config", "models.yaml", "--port", "0"], tmp_path)
    try:
        url = _url(lines)
        with httpx.Client(timeout=10) as client:
            assert client.get(url + "api/session").status_code == 401
            assert client.post(url + "api/login", json={"key": KEY}).status_code == 200
            session = client.get(url + "api/session").json()
            assert session["root"] == str(tmp_path) and session["log"] == str(tmp_path / "data" / "requests.sqlite")
            assert client.get(url + "api/runs").json() == []
            assert (
                client.get(url + "api/runs", headers={"Host": "evil.example"}).status_code == 400
            )  # the gateway's check
    finally:
        process.terminate()
        process.wait(30)


def test_hostile_requests_get_4xx_and_change_nothing(world: dict[str, Any]) -> None:
    review = world["root"] / "failures" / "review.jsonl"
    before = review.read_bytes()
    url = world["server"].url + "/ui"
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/api/login", json={"key": KEY}).status_code == 200
        correction = "/api/failures/correction"
        outside = {"folder": "../../etc", "failure_id": "f-0000000000000000", "correction": "x"}
        assert client.post(correction, json=outside).status_code == 400  # only folders it found under --runs
        unknown = {"folder": "failures", "failure_id": "f-nope", "correction": "x"}
        assert "no line for failure" in client.post(correction, json=unknown).json()["error"]
        stray = {"folder": "failures", "failure_id": "f-0000000000000000", "correction": [{"role": "user"}]}
        assert client.post(correction, json=stray).status_code == 400
        assert (
            client.post(correction, content=b"{not json", headers={"Content-Type": "application/json"}).status_code
            == 400
        )
        big = b'{"x": "' + b"a" * 1_100_000 + b'"}'
        assert client.post(correction, content=big, headers={"Content-Type": "application/json"}).status_code == 413
        assert client.get("/api/requests", params={"page": 0}).status_code == 400
        assert client.get("/api/requests", params={"size": 10_000}).status_code == 400
        assert client.get("/api/requests", params={"q": "x" * 600}).status_code == 400
        assert client.get("/api/requests/%27%20OR%201=1--").status_code == 404
        injected = client.get("/api/requests", params={"q": "%' OR 1=1 --"}).json()
        assert injected["total"] == 0
        assert client.get("/api/nothing-here").status_code == 404
    assert review.read_bytes() == before


def test_sign_in_pauses_after_many_wrong_keys(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from clawtune.ui.app import MAX_FAILED_LOGINS_PER_MINUTE, standalone

    settings = UISettings(tmp_path, tmp_path / "requests.sqlite", [KEY])
    settings.failed_logins.extend([time.time()] * MAX_FAILED_LOGINS_PER_MINUTE)  # a minute of guessing
    with TestClient(standalone(settings, ["testserver"])) as client:
        refused = client.post("/ui/api/login", json={"key": KEY})
        assert refused.status_code == 429 and "too many wrong keys" in refused.json()["error"]
        settings.failed_logins.clear()
        assert client.post("/ui/api/login", json={"key": KEY}).status_code == 200


def test_the_gateway_is_reached_on_loopback_when_bound_to_every_address() -> None:
    from clawtune.ui.app import loopback_url

    assert loopback_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert loopback_url("::", 8000) == "http://[::1]:8000"
    assert loopback_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert loopback_url("localhost", 8000) == "http://localhost:8000"


def test_a_review_rewritten_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    from clawtune.ui import sources

    write_review(tmp_path / "failures")
    review = tmp_path / "failures" / "review.jsonl"
    review.chmod(0o600)
    saved = sources.save_correction(tmp_path, "failures", "f-0000000000000000", "It is sunny.")
    assert saved["line"] == 1 and review.stat().st_mode & 0o777 == 0o600  # its mode kept
    real_stat = Path.stat
    rewritten = []

    def stat_then_rewrite(self: Path, *args: Any, **kwargs: Any) -> Any:
        staged = any(n.startswith(".review.jsonl.") and n.endswith(".tmp") for n in os.listdir(review.parent))
        if self == review and not rewritten and staged:  # the new text is staged, not yet in place:
            rewritten.append(True)  # now collect-failures writes a new review
            review.write_text(review.read_text() + "\n")
        return real_stat(self, *args, **kwargs)

    before = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "stat", stat_then_rewrite)
        with pytest.raises(sources.UIError, match="changed while the correction was being saved"):
            sources.save_correction(tmp_path, "failures", "f-0000000000000001", "Rain.")
        before = review.read_text()
    assert rewritten and "Rain." not in before and not list((tmp_path / "failures").glob(".*.tmp"))


def test_without_an_admin_key_the_page_says_how_to_set_one(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from clawtune.ui.app import standalone

    with TestClient(standalone(UISettings(tmp_path, tmp_path / "requests.sqlite", []), ["testserver"])) as client:
        for answer in (client.get("/ui/api/session"), client.post("/ui/api/login", json={"key": ""})):
            assert answer.status_code == 403 and "server.admin_keys" in answer.json()["error"]
        assert client.get("/ui/api/requests").status_code == 403


def test_a_correction_saved_on_the_page_is_taken_by_collect_failures(page: Any, world: dict[str, Any]) -> None:
    """The loop closed through the page: collect-failures finds the answer rated down in the gateway's log, a person
    corrects it on the page, and the next collect-failures run trains on that correction."""
    from clawtune.cli import main

    from ..conftest import read_jsonl

    root = world["root"]
    common = ["agent", "collect-failures", "--agent-id", "my-agent", "--source", "gateway"]
    common += ["--gateway-log", str(root / "serve-data"), "--gateway-model", "*", "--holdout", "0"]
    assert main([*common, "--output", str(root / "failure-cases")]) == 0
    review = read_jsonl(root / "failure-cases" / "review.jsonl")
    assert len(review) == 1 and "new question 0" in json.dumps(review[0]["messages"])  # the one rated negative
    show(page, "failures")
    item = page.locator(f'.failures[data-id="failure-cases"] .failure[data-failure="{review[0]["failure_id"]}"]')
    item.locator("textarea").fill("The right answer to question 0.")
    item.locator("button.save").click()
    item.locator(".saved-note.good").wait_for()
    corrections = root / "failure-cases" / "review.jsonl"
    assert main([*common, "--output", str(root / "failure-cases-2"), "--corrections", str(corrections)]) == 0
    corrected = read_jsonl(root / "failure-cases-2" / "corrected.jsonl")
    assert len(corrected) == 1 and corrected[0]["messages"][-1]["content"] == "The right answer to question 0."
    assert corrected[0]["metadata"]["corrected"] == "person"
