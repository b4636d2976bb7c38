// clawtune ui: one page over the files and the database the commands write. Every value from the server is put in
// the page as text (h() below never parses HTML): logged requests are written by strangers.
"use strict";

const view = document.getElementById("view");
let session = null;
const charts = [];

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, options) {
  const res = await fetch("api/" + path, Object.assign({ credentials: "same-origin" }, options || {}));
  let body = null;
  try { body = await res.json(); } catch (e) { body = { error: res.statusText }; }
  if (res.status === 401) { showLogin(); throw new Error("signed out"); }
  if (!res.ok) throw new Error((body && body.error) || res.statusText);
  return body;
}

function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
}

// ---- formatting ----
const fmt = {
  num(v, digits) { return v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits === undefined ? 2 : digits }); },
  loss(v) { return v === null || v === undefined ? "—" : Number(v).toFixed(4); },
  pct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%"; },
  ms(v) { return v === null || v === undefined ? "—" : Math.round(v) + " ms"; },
  time(t) { return t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "—"; },
};
const PALETTE = ["#2563eb", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

// Reports that could not be read: said on the page, never silently left out.
function problems(items) {
  const bad = items.filter((x) => x.problem);
  return bad.length ? h("section", { class: "card problems" }, h("h2", { class: "error" }, "could not read"), bad.map((x) => h("p", { class: "problem" }, x.problem))) : null;
}

function empty(text) { return h("div", { class: "empty", "data-empty": "" }, text); }
function card(title, ...children) { return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children); }
function table(headers, rows, attrs) {
  return h("table", attrs || {}, h("tr", {}, headers.map((x) => h("th", { class: x.num ? "num" : null }, x.label || x))), rows);
}
function clearCharts() { while (charts.length) charts.pop().destroy(); }

// A uPlot line chart. `xs` are numbers (steps or unix seconds); each series {label, values, dash?}.
function lineChart(container, title, xs, series, opts) {
  opts = opts || {};
  const width = Math.max(container.clientWidth || 600, 320);
  const plot = new uPlot({
    title, width, height: opts.height || 280,
    scales: { x: { time: !!opts.time } },
    axes: [{ label: opts.xLabel || "" }, { label: opts.yLabel || "" }],
    series: [{ label: opts.xLabel || (opts.time ? "time" : "x") }].concat(series.map((s, i) => ({
      label: s.label, stroke: s.color || PALETTE[i % PALETTE.length], width: 2, dash: s.dash,
      spanGaps: !opts.time, points: { show: xs.length < 40 },
    }))),
  }, [xs].concat(series.map((s) => s.values)), container);
  charts.push(plot);
  return plot;
}

// Several (step, value) lists on one x axis (uPlot wants one aligned x array).
function align(lists) {
  const xs = [...new Set(lists.flatMap((l) => l.map((p) => p.step)))].sort((a, b) => a - b);
  return [xs, lists.map((l) => { const m = new Map(l.map((p) => [p.step, p.loss])); return xs.map((x) => (m.has(x) ? m.get(x) : null)); })];
}

// ---- sign-in ----
function showLogin(message) {
  clearCharts();
  document.getElementById("logout").hidden = true;
  view.replaceChildren(document.getElementById("login-form").content.cloneNode(true));
  if (message) document.getElementById("login-error").textContent = message;
  document.getElementById("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const res = await fetch("api/login", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key: document.getElementById("key").value }) });
    if (res.ok) { start(); return; }
    const body = await res.json().catch(() => ({}));
    document.getElementById("login-error").textContent = body.error || res.statusText;
  });
}

// ---- views ----
const views = {};
let chosenEvaluation = null; // a report opened from a run's detail

views.runs = async function () {
  const runs = await api("runs");
  if (!runs.length) return [empty(`no runs under ${session.root} yet: run \`clawtune ft train\``)];
  const chartBox = h("div", { id: "chart-runs", class: "chart" });
  const detail = h("div", { id: "run-detail" });
  const ticked = new Set(runs.slice(0, 2).map((r) => r.id));
  const draw = () => {
    clearCharts();
    chartBox.replaceChildren();
    const chosen = runs.filter((r) => ticked.has(r.id));
    if (!chosen.length) { chartBox.append(empty("tick runs to compare their loss curves")); return; }
    const lists = [], series = [];
    chosen.forEach((r, i) => {
      const color = PALETTE[i % PALETTE.length];
      lists.push(r.losses); series.push({ label: `${r.id} train`, color });
      if (r.eval_losses.length) { lists.push(r.eval_losses); series.push({ label: `${r.id} validation`, color, dash: [6, 4] }); }
    });
    const [xs, values] = align(lists);
    if (!xs.length) { chartBox.append(empty("the ticked runs have logged no loss yet")); return; }
    lineChart(chartBox, "Loss (train solid, validation dashed)", xs, series.map((s, i) => Object.assign(s, { values: values[i] })), { xLabel: "step", yLabel: "loss" });
  };
  const showRun = (r) => {
    detail.replaceChildren(card(`Run ${r.id}`,
      h("p", {}, `${r.path} — ${r.finished ? "finished" : "in progress or stopped (no training-summary.json)"}`),
      table(["checkpoint", { label: "step", num: true }, "created", "files"], r.checkpoints.map((c) => h("tr", {},
        h("td", {}, c.name), h("td", { class: "num" }, c.step), h("td", {}, (c.manifest || {}).created || "—"),
        h("td", {}, Object.keys((c.manifest || {}).files || {}).length)))),
      h("h3", {}, "evaluations"), h("ul", { class: "run-evals" }, h("li", { class: "muted" }, "looking…")),
      h("h3", {}, "manifest"), h("pre", { class: "manifest" }, JSON.stringify(r.manifest, null, 2))));
    api("evaluations").then((all) => {
      const mine = all.filter((e) => !e.problem && e.id.startsWith(r.id === "." ? "" : r.id + "/"));
      detail.querySelector(".run-evals").replaceChildren(...(mine.length ? mine.map((e) => h("li", {},
        h("a", { href: "#evaluations", onclick: () => { chosenEvaluation = e.id; } }, e.id), ` — ${(e.report.comparison || {}).verdict || "no verdict"}`))
        : [h("li", { class: "muted" }, "none yet: run `clawtune ft evaluate --model-dir` on a checkpoint")]));
    });
  };
  const rows = runs.map((r) => h("tr", { "data-run": r.id },
    h("td", {}, h("input", { type: "checkbox", checked: ticked.has(r.id), "aria-label": `compare ${r.id}`, onchange: (ev) => { ev.target.checked ? ticked.add(r.id) : ticked.delete(r.id); draw(); } })),
    h("td", {}, h("a", { href: "#runs", onclick: (ev) => { ev.preventDefault(); showRun(r); } }, r.id)),
    h("td", {}, r.base_model || "—"), h("td", {}, r.method || "—"), h("td", { class: "muted" }, r.data || "—"),
    h("td", { class: "num steps" }, fmt.num(r.steps, 0)), h("td", { class: "num last-loss" }, fmt.loss(r.last_loss)),
    h("td", { class: "num" }, fmt.loss(r.last_eval_loss)), h("td", { class: "num checkpoints" }, r.checkpoints.length),
    h("td", { class: r.problem ? "error" : null, title: r.problem || null }, r.problem ? "summary unreadable" : r.finished ? "finished" : "running/stopped")));
  const list = card(`Training runs under ${session.root}`, table(["", "run", "base", "method", "data", { label: "steps", num: true },
    { label: "last loss", num: true }, { label: "last val loss", num: true }, { label: "checkpoints", num: true }, "state"], rows, { id: "runs-table" }));
  setTimeout(draw, 0);
  return [list, card("Loss curves", chartBox), detail];
};

function mixTable(mix) {
  const cats = Object.keys(mix || {});
  return table(["category", { label: "examples", num: true }, { label: "share", num: true }, { label: "target", num: true }, "against the target"],
    cats.map((c) => h("tr", { "data-category": c }, h("td", {}, c), h("td", { class: "num count" }, mix[c].count),
      h("td", { class: "num share" }, fmt.pct(mix[c].share)), h("td", { class: "num" }, fmt.pct(mix[c].target)),
      h("td", {}, h("div", { class: "bar", style: `width:${Math.min(100, 100 * mix[c].share)}%` }),
        h("div", { class: "target", style: `width:${Math.min(100, 100 * mix[c].target)}%` })))), { class: "bars mix" });
}

function countsLine(label, counts) {
  const entries = Object.entries(counts || {});
  return h("p", {}, h("b", {}, label + ": "), entries.length ? entries.map(([k, v]) => `${k} ${v}`).join(", ") : "none");
}

function statsBlock(stats) {
  if (!stats) return h("p", { class: "muted" }, "the data file is no longer where the report says");
  const t = stats.token_length || {};
  return h("div", {}, mixTable(stats.mix),
    h("p", {}, h("b", {}, "token lengths: "), Object.entries(t).map(([k, v]) => `${k} ${fmt.num(v, 0)}`).join(", ") || "—"),
    countsLine("tool calls", stats.tool_calls), countsLine("duplicates", stats.duplicates));
}

views.data = async function () {
  const all = await api("data");
  const reports = all.filter((x) => !x.problem);
  if (!reports.length && all.length) return [problems(all)];
  if (!reports.length) return [empty(`no export or augmentation report under ${session.root} yet: run \`clawtune agent export-training-data\``)];
  return [problems(all)].concat(reports.map((d) => {
    const r = d.report;
    if (d.kind === "export") {
      const s = r.splits || {};
      return h("section", { class: "card data-report", "data-kind": "export", "data-id": d.id }, h("h2", {}, `Export ${d.id}`),
        h("div", { class: "stats" },
          h("div", { class: "stat" }, h("b", { class: "examples" }, r.examples_written), "examples written"),
          h("div", { class: "stat" }, h("b", {}, `${r.sessions_used} / ${r.sessions_read}`), "sessions used / read"),
          h("div", { class: "stat" }, h("b", {}, fmt.pct(r.tool_call_share)), "tool-call share"),
          h("div", { class: "stat" }, h("b", {}, ["train", "validation", "test"].map((k) => (s[k] || {}).examples || 0).join(" / ")), "train / validation / test")),
        countsLine("dropped", r.dropped), countsLine("bad input skipped", (r.skipped_input || {}).by_reason),
        countsLine("redactions", typeof r.redactions === "string" ? { [r.redactions]: "" } : r.redactions),
        h("h3", {}, "training file: mix, lengths, tools"), statsBlock(d.stats));
    }
    return h("section", { class: "card data-report", "data-kind": "augment", "data-id": d.id }, h("h2", {}, `Augmentation ${d.id}`),
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("b", { class: "examples" }, r.examples_out), `examples out (target ${r.target_out})`),
        h("div", { class: "stat" }, h("b", {}, r.examples_in), "examples in"),
        h("div", { class: "stat" }, h("b", {}, r.shortfall), "short of the target")),
      countsLine("made by", r.made_by), countsLine("discarded", r.discarded),
      h("h3", {}, "mix before"), mixTable(r.mix_before), h("h3", {}, "after: mix, lengths, tools"), statsBlock(d.stats));
  }));
};

function metricCell(side, row) {
  const raw = side ? side[row.key] : null;
  const value = raw && typeof raw === "object" ? raw.value : raw;
  if (value === null || value === undefined) return [null, "—"];
  if (row.kind.startsWith("rate")) {
    const ci = raw && raw.ci ? ` [${Math.round(100 * raw.ci[0])}–${Math.round(100 * raw.ci[1])}%]` : "";
    return [value, fmt.pct(value) + ci];
  }
  if (row.kind.startsWith("seconds")) return [value, value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`];
  if (row.kind.startsWith("money")) return [value, `$${value.toFixed(6)}`];
  return [value, fmt.num(value, 1)];
}

views.evaluations = async function () {
  const all = await api("evaluations");
  const reports = all.filter((x) => !x.problem);
  if (!reports.length && all.length) return [problems(all)];
  if (!reports.length) return [empty(`no evaluation report under ${session.root} yet: run \`clawtune ft evaluate\``)];
  const holder = h("div", {});
  const show = (e) => {
    const r = e.report;
    const rows = session.eval_rows.map((row) => {
      const [b, bt] = metricCell(r.baseline, row), [t, tt] = metricCell(r.fine_tuned, row);
      if (b === null && t === null) return null;
      let change = "—";
      if (b !== null && t !== null) change = row.kind.startsWith("rate") ? `${((t - b) * 100).toFixed(1)} pts` : b ? `${Math.round((100 * (t - b)) / b)}%` : "—";
      return h("tr", { "data-metric": row.key }, h("td", {}, row.label), h("td", { class: "num baseline" }, bt), h("td", { class: "num fine-tuned" }, tt), h("td", { class: "num" }, change));
    });
    const f = r.forgetting;
    // Every turn's outcome (reports of `ft evaluate` since per_item); older reports have only the worst failures.
    const perItem = r.per_item || (r.worst_failures || []).map((x) => Object.assign({ verdict: x.baseline_correct ? "baseline only" : "both wrong", tools: [] }, x));
    const categories = [...new Set(perItem.map((x) => x.category))];
    const tools = [...new Set(perItem.flatMap((x) => x.tools || []))];
    const catSel = h("select", { id: "filter-category" }, h("option", { value: "" }, "every category"), categories.map((c) => h("option", { value: c }, c)));
    const verdictSel = h("select", { id: "filter-verdict" }, h("option", { value: "" }, "every verdict"),
      ["fine-tuned only", "baseline only", "both wrong", "both right"].map((v) => h("option", { value: v }, v)));
    const toolSel = h("select", { id: "filter-tool" }, h("option", { value: "" }, "every tool"), tools.map((t) => h("option", { value: t }, t)));
    const text = h("input", { type: "search", id: "filter-text", placeholder: "words…" });
    const body = h("tbody", {});
    const shown = h("span", { id: "items-shown", class: "muted" });
    const filter = () => {
      const kept = perItem.filter((x) => (!catSel.value || x.category === catSel.value)
        && (!verdictSel.value || x.verdict === verdictSel.value)
        && (!toolSel.value || (x.tools || []).includes(toolSel.value))
        && (!text.value || JSON.stringify(x).toLowerCase().includes(text.value.toLowerCase())));
      shown.textContent = `${kept.length} of ${perItem.length}`;
      body.replaceChildren(...kept.slice(0, 500).map((x) => h("tr", { class: "item" }, h("td", {}, x.id), h("td", {}, x.category), h("td", {}, x.verdict),
        h("td", {}, x.input), h("td", {}, x.reference), h("td", {}, x.fine_tuned), h("td", {}, x.baseline || "—"), h("td", {}, x.why || ""))));
    };
    [catSel, verdictSel, toolSel, text].forEach((el) => el.addEventListener("input", filter));
    filter();
    holder.replaceChildren(
      card(`Evaluation ${e.id}`, h("p", {}, `Baseline ${r.baseline.name}, fine-tuned ${r.fine_tuned.name}, ${r.items} held-out turns from ${r.test_set}.`),
        h("p", { id: "verdict" }, (r.comparison || {}).verdict || "no verdict in this report"),
        table(["metric", { label: "baseline", num: true }, { label: "fine-tuned", num: true }, { label: "change", num: true }], rows, { id: "eval-table" })),
      card("Accuracy by category", table(["category", { label: "items", num: true }, { label: "baseline", num: true }, { label: "fine-tuned", num: true }],
        Object.entries(r.baseline.per_category || {}).filter(([, b]) => b.n).map(([c, b]) => h("tr", { "data-category": c }, h("td", {}, c), h("td", { class: "num" }, b.n),
          h("td", { class: "num" }, fmt.pct(b.value)), h("td", { class: "num" }, fmt.pct(((r.fine_tuned.per_category || {})[c] || {}).value)))), { id: "eval-categories" })),
      card("Forgetting check", f ? h("p", { id: "forgetting", class: f.flagged ? "error" : "good" },
        `general accuracy ${fmt.pct(f.before)} → ${fmt.pct(f.after)} (drop ${fmt.pct(f.drop)}, threshold ${fmt.pct(f.threshold)}): ${f.flagged ? "FLAGGED" : "no forgetting flagged"}`)
        : h("p", { class: "muted" }, "not run (evaluate --metrics without forgetting)")),
      card(r.per_item ? "Every held-out turn" : "Worst failures of the fine-tuned model (this report has no per-item results)",
        h("div", { class: "toolbar" }, catSel, verdictSel, toolSel, text, shown),
        perItem.length ? h("table", { id: "eval-items" }, h("tr", {}, ["item", "category", "verdict", "input", "reference", "fine-tuned", "baseline", "why"].map((x) => h("th", {}, x))), body)
          : h("p", { class: "muted" }, "the fine-tuned model failed no item")));
  };
  const picker = h("select", { id: "eval-pick", onchange: (ev) => show(reports[ev.target.selectedIndex]) }, reports.map((e) => h("option", {}, e.id)));
  const first = Math.max(0, reports.findIndex((e) => e.id === chosenEvaluation));
  chosenEvaluation = null;
  picker.selectedIndex = first;
  show(reports[first]);
  return [problems(all), h("div", { class: "toolbar" }, "report ", picker), holder];
};

views.traffic = async function () {
  const t = await api("traffic");
  if (!t.requests) return [empty(`no requests in ${session.log} yet: run \`clawtune serve\` and send the agent's traffic through it`)];
  const group = h("select", { id: "traffic-group" }, ["model", "adapter", "arm"].map((g) => h("option", { value: g }, `per ${g}`)));
  const overTime = h("div", { id: "chart-traffic", class: "chart" });
  const latency = h("div", { id: "chart-latency", class: "chart" });
  const drawn = [];
  const draw = () => {
    while (drawn.length) { const c = drawn.pop(); c.destroy(); charts.splice(charts.indexOf(c), 1); }
    overTime.replaceChildren();
    const s = t.series[group.value] || {};
    const names = Object.keys(s);
    if (!names.length) { overTime.append(empty(`no request had an ${group.value}`)); return; }
    drawn.push(lineChart(overTime, `Requests per ${t.bucket_s >= 3600 ? t.bucket_s / 3600 + " h" : t.bucket_s / 60 + " min"}`, t.times,
      names.map((n) => ({ label: n, values: s[n] })), { time: true }));
  };
  group.addEventListener("change", draw);
  setTimeout(() => {
    draw();
    lineChart(latency, "Latency", t.times, [{ label: "p50 ms", values: t.latency_p50_ms }, { label: "p95 ms", values: t.latency_p95_ms, dash: [6, 4] }], { time: true });
  }, 0);
  const models = table(["model", { label: "requests", num: true }, { label: "errors", num: true }, { label: "p50", num: true }, { label: "p95", num: true },
    { label: "prompt tokens", num: true }, { label: "saved by the prompt policy", num: true }, { label: "completion tokens", num: true },
    { label: "valid tool calls", num: true }, { label: "feedback + / −", num: true }],
  t.models.map((m) => h("tr", { "data-model": m.model }, h("td", {}, m.model), h("td", { class: "num requests" }, m.requests), h("td", { class: "num" }, m.errors),
    h("td", { class: "num" }, fmt.ms(m.latency_p50_ms)), h("td", { class: "num" }, fmt.ms(m.latency_p95_ms)), h("td", { class: "num" }, fmt.num(m.prompt_tokens, 0)),
    h("td", { class: "num saved" }, fmt.num(m.tokens_saved, 0)), h("td", { class: "num" }, fmt.num(m.completion_tokens, 0)),
    h("td", { class: "num" }, `${m.tool_calls_valid} / ${m.tool_calls}`), h("td", { class: "num" }, `${m.positive} / ${m.negative}`))), { id: "traffic-models" });
  const fb = t.feedback || {};
  const summary = h("div", { class: "stats" },
    h("div", { class: "stat" }, h("b", { id: "traffic-total" }, t.requests), "requests"),
    h("div", { class: "stat" }, h("b", { id: "traffic-saved" }, fmt.num(t.tokens_saved, 0)), "prompt tokens saved by the system-prompt policy"),
    h("div", { class: "stat" }, h("b", { id: "traffic-feedback" }, `${fb.positive || 0} / ${fb.negative || 0}`), "feedback: positive / negative"),
    h("div", { class: "stat" }, h("b", {}, t.files.length), `log files (${t.files.join(", ")})`));
  return [card(`Traffic in ${t.log}: ${fmt.time(t.first)} – ${fmt.time(t.last)}`, summary, h("div", { class: "toolbar" }, group)),
    h("div", { class: "grid" }, card(null, overTime), card(null, latency)), card("Per model", models), requestList(t.models.map((m) => m.model))];
};

function requestList(models) {
  const q = h("input", { type: "search", id: "request-search", placeholder: "search ids, models, text…" });
  const model = h("select", { id: "request-model" }, h("option", { value: "" }, "every model"), models.map((m) => h("option", { value: m }, m)));
  const body = h("tbody", {});
  const pager = h("span", { id: "request-pager", class: "muted" });
  const detail = h("div", { id: "request-detail" });
  let page = 1, total = 0;
  const prev = h("button", { onclick: () => { if (page > 1) { page--; load(); } } }, "← newer");
  const next = h("button", { id: "request-next", onclick: () => { if (page * 50 < total) { page++; load(); } } }, "older →");
  const load = async () => {
    const r = await api(`requests?page=${page}&size=50&q=${encodeURIComponent(q.value)}&model=${encodeURIComponent(model.value)}`);
    total = r.total;
    pager.textContent = total ? `${r.offset + 1}–${r.offset + r.requests.length} of ${total}` : "no request matches";
    body.replaceChildren(...r.requests.map((x) => h("tr", { class: "clickable request-row", "data-id": x.id, onclick: () => openRequest(x.id, detail) },
      h("td", {}, fmt.time(x.created)), h("td", {}, x.requested_model || "—"), h("td", {}, x.model || "—"), h("td", {}, x.adapter || "—"),
      h("td", {}, x.arm || "—"), h("td", { class: x.status >= 400 ? "error" : null }, x.status), h("td", { class: "num" }, fmt.ms(x.latency_ms)),
      h("td", { class: "num" }, `${x.prompt_tokens ?? "—"} / ${x.completion_tokens ?? "—"}`), h("td", {}, x.ratings || ""))));
  };
  let timer = null;
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { page = 1; load(); }, 250); });
  model.addEventListener("change", () => { page = 1; load(); });
  load();
  return h("div", {}, card("Requests", h("div", { class: "toolbar" }, q, model, prev, next, pager),
    h("table", { id: "requests" }, h("tr", {}, ["time", "asked for", "served by", "adapter", "arm", "status", "latency", "tokens in / out", "feedback"].map((x) => h("th", {}, x))), body)), detail);
}

function messageView(m) {
  const parts = [];
  if (typeof m.content === "string") parts.push(m.content);
  else if (Array.isArray(m.content)) parts.push(m.content.map((p) => p.text || JSON.stringify(p)).join("\n"));
  for (const c of m.tool_calls || []) parts.push(`[tool call] ${(c.function || {}).name}(${(c.function || {}).arguments})`);
  return h("div", { class: `msg ${m.role}` }, h("div", { class: "role" }, m.role + (m.weight === 0 ? " (not trained)" : "")), h("pre", {}, parts.join("\n") || "(empty)"));
}

async function openRequest(id, into) {
  const r = await api(`requests/${encodeURIComponent(id)}`);
  const req = r.request || {};
  const answer = r.response && r.response.choices ? r.response.choices.map((c) => c.message || c.delta || {}) : [];
  into.replaceChildren(card(`Request ${r.id}`,
    h("p", {}, `${fmt.time(r.created)} · asked for ${r.requested_model || "—"} · served by ${r.model || "—"}${r.adapter ? " + " + r.adapter : ""} · status ${r.status}`
      + (r.scrubbed ? ` · scrubbed as logged (${r.redactions || 0} redactions)` : r.scrubbed === 0 ? " · stored as sent (log_scrub off)" : "") + (r.archive ? ` · from ${r.archive}` : "")),
    r.error ? h("p", { class: "error" }, r.error) : null,
    h("h3", {}, "request"), (req.messages || []).map(messageView),
    h("h3", {}, "answer"), answer.length ? answer.map(messageView) : h("pre", { class: "response" }, JSON.stringify(r.response, null, 2)),
    h("h3", {}, "feedback"), r.feedback.length ? r.feedback.map((f) => h("p", {}, `${fmt.time(f.created)} ${f.rating}${f.comment ? ": " + f.comment : ""}`)) : h("p", { class: "muted" }, "none")));
  into.scrollIntoView({ block: "start" });
}

views.experiments = async function () {
  const list = await api("experiments");
  if (!list.length) return [empty(`no experiment in ${session.log} yet: run \`clawtune ft ab-test --model-a … --model-b …\``)];
  const out = [];
  for (const e of list) {
    const result = e.result || ((e.refreshes[e.refreshes.length - 1] || {}).figures) || {};
    const primary = result.primary || ((e.settings || {}).primary);
    const chart = h("div", { class: "chart cs-chart", "data-experiment": e.id });
    const status = h("b", { class: `status ${e.status}` }, e.status);
    const message = h("span", { class: "muted action-note" }, notes[e.id] || "");
    delete notes[e.id];
    const buttons = experimentActions(e, message);
    const arms = Object.entries(e.arms || {}).map(([k, v]) => `${k} ${v}`).join(" · ");
    const figures = result.arms ? table(["arm", "model", { label: "sessions", num: true }, { label: "requests", num: true },
      { label: "satisfaction (rated)", num: true }, { label: "accuracy (graded)", num: true }, { label: "p50 / p95", num: true }, { label: "errors", num: true }],
    Object.entries(result.arms).map(([k, a]) => h("tr", { "data-arm": k }, h("td", {}, k), h("td", {}, (result.models || {})[k] || "—"),
      h("td", { class: "num" }, a.units ?? "—"), h("td", { class: "num" }, a.requests ?? "—"),
      h("td", { class: "num" }, `${fmt.pct(a.user_satisfaction)} (${a.rated ?? 0})`), h("td", { class: "num" }, `${fmt.pct(a.accuracy)} (${a.graded ?? 0})`),
      h("td", { class: "num" }, `${fmt.ms(a.latency_p50_ms)} / ${fmt.ms(a.latency_p95_ms)}`), h("td", { class: "num" }, fmt.pct(a.error_rate)))), { class: "arms" }) : null;
    out.push(h("section", { class: "card experiment", "data-id": e.id }, h("h2", {}, `Experiment ${e.id} `, status, " ", buttons, " ", message),
      h("p", {}, `splits ${e.model || e.id}: ${arms}; sticky per ${e.sticky}; started ${fmt.time(e.created)}${e.stopped ? ", ended " + fmt.time(e.stopped) : ""}`),
      e.canary ? h("p", { class: "canary" }, canaryLabel(e)) : null,
      e.promotion ? h("p", { class: "promotion" }, promotionLabel(e)) : null,
      h("p", { class: "verdict" }, result.verdict ? `verdict on ${primary}: ${result.verdict}${result.reason ? " (" + result.reason + ")" : ""}` : "no verdict yet"),
      figures, testsTable(result), chart, decisionsTable(e.events || [])));
    const points = e.refreshes.map((r) => [r.created, ((r.figures || {}).tests || {})[primary] || {}]).filter(([, t]) => t.lower !== undefined);
    if (points.length) {
      setTimeout(() => lineChart(chart, `Confidence sequence of B − A on ${primary}`, points.map((p) => p[0]), [
        { label: "estimate", values: points.map((p) => p[1].estimate) },
        { label: "lower", values: points.map((p) => p[1].lower), dash: [6, 4] },
        { label: "upper", values: points.map((p) => p[1].upper), dash: [6, 4] }], { time: true }), 0);
    } else chart.append(empty("no refresh recorded yet: the interval is drawn as `ft ab-test` refreshes it"));
  }
  return out;
};

// What an action said, shown on the card once the view is drawn again with the gateway's new state.
const notes = {};

// Stop (running), Promote (running or ended, not rolled back), Roll back (running or promoted): each through the
// running gateway's admin API, as `clawtune ft ab-test stop|promote|rollback ID` does; the view is then drawn again
// from the database, so the status and the decision recorded come from the gateway, not from the page.
function experimentActions(e, message) {
  const actions = [
    ["stop", "stop", e.status === "running", `Stop ${e.id}? Its model's requests go back to the incumbent.`],
    ["promote", "promote", e.status === "running" || e.status === "stopped",
      `Promote B of ${e.id}? The gateway serves it behind ${e.model || e.id} from now on (and writes that into its models.yaml, with a backup).`],
    ["rollback", "roll back", e.status === "running" || e.status === "promoted",
      `Roll back ${e.id}? Every request for ${e.model || e.id} goes back to A at once${e.status === "promoted" ? ", and the promotion is undone" : ""}.`],
  ];
  const buttons = [];
  for (const [verb, label, allowed, question] of actions) {
    if (!allowed) continue;
    buttons.push(h("button", { class: verb, onclick: async (ev) => {
      if (!confirm(question)) return;
      for (const b of buttons) b.disabled = true;
      message.textContent = `${label}…`; message.className = "muted action-note";
      try {
        const r = await post(`experiments/${encodeURIComponent(e.id)}/${verb}`);
        notes[e.id] = `${r.status} through the gateway` + (r.said ? `: ${r.said}` : "");
        await render();
      } catch (err) {
        for (const b of buttons) b.disabled = false;
        message.textContent = err.message; message.className = "error action-note";
      }
    } }, label));
  }
  return buttons.flatMap((b) => [b, " "]);
}

function canaryLabel(e) {
  const c = e.canary, steps = c.steps || [];
  const ramp = `canary ${steps.map((x) => x + "%").join(" → ")}`;
  if (c.step >= steps.length) return `${ramp}: B takes 100% (promoted)`;
  const at = `${ramp}: step ${c.step + 1} of ${steps.length}, B ${steps[c.step]}% since ${fmt.time(c.since)}`;
  return e.status === "running" ? at : `${at} when it ended (${e.status})`;
}

function promotionLabel(e) {
  const p = e.promotion, c = p.config;
  const file = c ? `; ${c.path} says so${c.backup ? " (backup " + c.backup + ")" : ""}` : "; no models.yaml changed (the gateway was not started from one)";
  const openclaw = p.register ? `; OpenClaw's primary model was set to ${p.register.model}` : "";
  const now = e.status === "promoted" ? "are served by" : "were served by (until the rollback)";
  return `promoted ${fmt.time(p.at)}: requests for ${p.model} ${now} ${p.arm}${file}${openclaw}`;
}

// The figures a decision was taken on, in a line (the whole record opens below it).
function figuresLine(f) {
  if (!f) return "";
  const n = (v) => (v === null || v === undefined ? "—" : Number(v).toPrecision(3));
  const interval = (t) => (t && t.lower != null && t.upper != null ? ` [${n(t.lower)}, ${n(t.upper)}]` : "");
  const parts = [];
  if (f.cause) parts.push(`cause: ${f.cause}`);
  if (f.guardrail) {
    // every guardrail is a share (error rate, invalid tool calls, slow requests): in percentage points, as the reason
    const g = f.guardrail, t = g.test || {};
    const pts = (v) => (v === null || v === undefined ? "—" : `${v > 0 ? "+" : ""}${(100 * v).toFixed(1)}`);
    const range = t.lower != null && t.upper != null ? ` [${pts(t.lower)}, ${pts(t.upper)}]` : "";
    parts.push(`${g.metric}: B − A ${pts(t.estimate)}${range} pts, allowed ${pts(g.threshold)} pts${g.breached ? ", breached" : ""}`);
  }
  if (f.primary) {
    const t = f.primary.test || {};
    parts.push(`${f.primary.metric}: ${f.primary.verdict}, B − A ${n(t.estimate)}${interval(t)}`);
  }
  if (f.sessions_a !== undefined || f.sessions_b !== undefined) parts.push(`sessions A ${f.sessions_a ?? "—"}, B ${f.sessions_b ?? "—"}`);
  if (f.guardrails) {
    const held = Object.entries(f.guardrails).map(([k, g]) => `${k} ${g.breached ? "breached" : "held"}`);
    if (held.length) parts.push(`guardrails: ${held.join(", ")}`);
  }
  if (f.canary && f.canary.steps) parts.push(`canary ${f.canary.steps.map((x) => x + "%").join(" → ")}`);
  if (f.verdict) parts.push(`verdict: ${f.verdict}`);
  if (f.config && f.config.path) parts.push(`${f.config.path}${f.config.backup ? " (backup " + f.config.backup + ")" : ""}`);
  return parts.join(" · ");
}

// Every decision the gateway recorded on the experiment (`experiment_events`), oldest first.
function decisionsTable(events) {
  if (!events.length) return null;
  return h("div", {}, h("h3", {}, "decisions"), table(["time", "decision", "arms after", "why", "figures"],
    events.map((ev) => h("tr", { "data-kind": ev.kind, class: ev.kind === "rollback" ? "bad" : null },
      h("td", {}, fmt.time(ev.created)), h("td", {}, ev.kind),
      h("td", {}, Object.entries(ev.arms || {}).map(([k, v]) => `${k} ${fmt.num(v)}`).join(", ")),
      h("td", { class: "why" }, ev.reason || ""),
      h("td", { class: "figures" }, figuresLine(ev.figures),
        ev.figures && Object.keys(ev.figures).length ? h("details", {}, h("summary", {}, "all figures"), h("pre", {}, JSON.stringify(ev.figures, null, 2))) : null))),
    { class: "events" }));
}

// Every metric's test at the last refresh (or the final result): B − A with its always-valid interval.
function testsTable(result) {
  const tests = Object.entries(result.tests || {});
  if (!tests.length) return null;
  const n = (v) => (v === null || v === undefined ? "—" : Number(v).toPrecision(3));
  return table(["metric", { label: "A", num: true }, { label: "B", num: true }, { label: "B − A", num: true }, { label: "interval", num: true }, { label: "p", num: true }],
    tests.map(([name, t]) => h("tr", { "data-metric": name }, h("td", {}, name + (name === result.primary ? " (primary)" : "")), h("td", { class: "num" }, n(t.mean_a)),
      h("td", { class: "num" }, n(t.mean_b)), h("td", { class: "num" }, n(t.estimate)), h("td", { class: "num" }, t.lower == null || t.upper == null ? "—" : `[${n(t.lower)}, ${n(t.upper)}]`),
      h("td", { class: "num" }, n(t.p_value)))), { class: "tests" });
}

views.failures = async function () {
  const folders = await api("failures");
  if (!folders.length) return [empty(`no collect-failures output under ${session.root} yet: run \`clawtune agent collect-failures\``)];
  return folders.map((f) => {
    const items = f.items.filter((x) => x.failure_id);
    const open = items.filter((x) => x.correction === null || x.correction === undefined).length;
    // A long review is shown 25 at a time, the ones without a correction first.
    const ordered = items.filter((x) => x.correction == null).concat(items.filter((x) => x.correction != null));
    const list = h("div", {});
    let shown = 0;
    const more = h("button", { class: "more", onclick: () => showMore() }, "show more");
    const showMore = () => {
      list.append(...ordered.slice(shown, shown + 25).map((x) => failureItem(f, x)));
      shown = Math.min(shown + 25, ordered.length);
      more.hidden = shown >= ordered.length;
      more.textContent = `show more (${ordered.length - shown} left)`;
    };
    showMore();
    return h("section", { class: "card failures", "data-id": f.id }, h("h2", {}, `Failures in ${f.id}`),
      h("p", {}, `${items.length} failures to review in ${f.review}, ${open} without a correction. Then run collect-failures again with --corrections ${f.review}.`),
      f.items.filter((x) => x.problem).map((x) => h("p", { class: "error" }, `line ${x.line}: ${x.problem}`)),
      items.length ? [list, more] : empty("nothing in the review file: every failure found was corrected (by its own recovery or a teacher)"));
  });
};

function failureItem(folder, x) {
  const messages = x.messages || [];
  const lastUser = messages.map((m) => m.role).lastIndexOf("user");
  const text = h("textarea", { class: "correction", placeholder: "the right answer (text), or a JSON list of assistant/tool messages" });
  if (x.correction !== null && x.correction !== undefined) text.value = typeof x.correction === "string" ? x.correction : JSON.stringify(x.correction, null, 2);
  const note = h("span", { class: "muted saved-note" });
  const tools = (x.tools || []).map((t) => (t.function || t).name);
  const pick = tools.length ? h("select", { class: "pick-tool", onchange: (ev) => {
    if (!ev.target.value) return;
    text.value = JSON.stringify([{ role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: ev.target.value, arguments: "{}" } }] }, { role: "tool", tool_call_id: "call_1", content: "…" }, { role: "assistant", content: "…" }], null, 2);
  } }, h("option", { value: "" }, "start from a tool call…"), tools.map((n) => h("option", { value: n }, n))) : null;
  const save = h("button", { class: "save", onclick: async () => {
    let correction = text.value.trim();
    if (correction.startsWith("[") || correction.startsWith("{")) {
      try { correction = JSON.parse(correction); } catch (e) { note.textContent = "not valid JSON: " + e.message; note.className = "error saved-note"; return; }
    }
    try {
      const r = await post("failures/correction", { folder: folder.id, failure_id: x.failure_id, correction });
      note.textContent = `saved to ${r.review}:${r.line}`; note.className = "good saved-note";
    } catch (err) { note.textContent = err.message; note.className = "error saved-note"; }
  } }, "save correction");
  return h("div", { class: "card failure", "data-failure": x.failure_id },
    h("h3", {}, x.failure_id, " ", (x.signals || []).map((s) => h("span", { class: "pill bad" }, s.type + (s.tool ? ` ${s.tool}` : "")))),
    h("p", { class: "muted" }, x.location || ""),
    h("details", {}, h("summary", {}, `context (${Math.max(lastUser, 0)} earlier messages)`), messages.slice(0, Math.max(lastUser, 0)).map(messageView)),
    messages.slice(Math.max(lastUser, 0)).map(messageView),
    h("div", { class: "toolbar" }, pick), text, h("div", { class: "toolbar" }, save, note));
}

// ---- routing ----
async function render() {
  const name = (location.hash || "#runs").slice(1);
  const fn = views[name] || views.runs;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === name);
  clearCharts();
  view.replaceChildren(h("p", { class: "muted" }, "loading…"));
  try {
    const parts = await fn();
    view.replaceChildren(...parts.filter(Boolean));
    view.dataset.ready = name;
  } catch (err) {
    if (err.message !== "signed out") view.replaceChildren(h("p", { class: "error" }, err.message));
  }
}

async function start() {
  try {
    const res = await fetch("api/session", { credentials: "same-origin" });
    const body = await res.json().catch(() => ({}));
    if (res.status === 401) { showLogin(); return; }
    if (!res.ok) { view.replaceChildren(h("p", { class: "error", id: "refused" }, body.error || res.statusText)); return; }
    session = body;
  } catch (err) { view.replaceChildren(h("p", { class: "error" }, String(err))); return; }
  document.getElementById("logout").hidden = false;
  render();
}

window.addEventListener("hashchange", () => { if (session) render(); });
document.getElementById("logout").addEventListener("click", async () => { await post("logout"); session = null; showLogin(); });
start();
