// The orrery run view: draws a run from its journal entries, either inlined
// in the page (a report made by `orrery report`) or streamed live from the
// host over server-sent events (`orrery run --ui`, `orrery dev`).
"use strict";

const PHASES = ["INIT", "READY", "PLANNING", "EXECUTING", "VALIDATING", "COMPLETE", "FAILED"];
const LANE_H = 40, LANE_GAP = 8, LABEL_W = 170, AXIS_H = 22, RIGHT_PAD = 90;
const SVG_NS = "http://www.w3.org/2000/svg";

let run;

function freshRun() {
  return {
    entries: [], t0: null, tLast: null,
    agents: new Map(), messages: new Map(), blackboard: new Map(),
    llm: [], reloads: [], errors: [], failures: [], hosts: new Set(),
    task: null, status: null, metrics: null, selectedKey: null,
  };
}

function agentOf(id) {
  let a = run.agents.get(id);
  if (!a) {
    a = { id, role: id.replace(/-\d+$/, ""), host: null, phases: [], firstAt: null,
          sent: 0, handled: 0, givenBack: 0, dead: 0, writes: 0, llmCalls: 0,
          tokensIn: 0, tokensOut: 0, errors: 0, spawnedBy: null, spawnedAt: null };
    run.agents.set(id, a);
  }
  return a;
}

function messageOf(id) {
  let m = run.messages.get(id);
  if (!m) {
    m = { id, from: null, to: null, type: null, sentAt: null, bytes: 0, payload: undefined, deliveries: [] };
    run.messages.set(id, m);
  }
  return m;
}

// Takes one journal entry into the model of the run.
function ingest(e) {
  run.entries.push(e);
  const t = e.at_us / 1000;
  if (run.t0 === null || t < run.t0) run.t0 = t;
  if (run.tLast === null || t > run.tLast) run.tLast = t;
  run.hosts.add(e.host);
  const agent = e.agent ? agentOf(e.agent) : null;
  if (agent) {
    if (agent.firstAt === null) agent.firstAt = t;
    if (!agent.host) agent.host = e.host;
  }
  switch (e.kind) {
    case "run_started":
      if (e.owner || !run.task) run.task = { id: e.task, type: e.task_type, description: e.description };
      if (!run.status) run.status = "running";
      break;
    case "run_ended":
      if (e.owner) { run.status = e.status; run.metrics = e.metrics || null; run.duration = e.duration_ms; }
      break;
    case "phase":
      if (e.role) agent.role = e.role;
      agent.phases.push({ phase: e.to, at: t, reason: e.reason });
      break;
    case "spawned":
      agent.role = e.role; agent.spawnedBy = e.parent || null; agent.spawnedAt = t;
      break;
    case "message_sent": {
      const m = messageOf(e.id);
      Object.assign(m, { from: e.agent, to: e.to, type: e.type, sentAt: t, bytes: e.bytes, payload: e.payload });
      if (agent) agent.sent++;
      break;
    }
    case "message_handled": case "message_given_back": case "message_dead_lettered": {
      const m = messageOf(e.id);
      if (!m.type) { m.type = e.type; m.from = e.from; }
      const outcome = e.kind === "message_handled" ? "handled" : e.kind === "message_given_back" ? "given_back" : "dead";
      m.deliveries.push({ agent: e.agent, at: t, outcome, attempt: e.attempt || e.attempts });
      if (agent) {
        if (outcome === "handled") agent.handled++;
        else if (outcome === "given_back") agent.givenBack++;
        else agent.dead++;
      }
      break;
    }
    case "blackboard_write": case "blackboard_delete": {
      let h = run.blackboard.get(e.key);
      if (!h) { h = []; run.blackboard.set(e.key, h); }
      h.push({ at: t, agent: e.agent || "host", bytes: e.bytes || 0, value: e.value,
               deleted: e.kind === "blackboard_delete", hasValue: "value" in e });
      if (agent) agent.writes++;
      break;
    }
    case "blackboard_write_failed": {
      // The write it stands for was journaled as sent: mark it, so the key
      // shows the last write that was applied.
      const h = run.blackboard.get(e.key) || [];
      const w = h.findLast((w) => w.agent === (e.agent || "host") && !w.deleted && !w.failed);
      if (w) Object.assign(w, { failed: true, error: e.error });
      if (w && agent) agent.writes--;
      const who = e.agent || "host";
      if (e.error.startsWith("not known whether")) {
        // Writes dropped after an earlier failure: one line per agent, counted.
        let f = run.failures.find((f) => f.unknownWrites && f.agent === who);
        if (!f) { f = { at: t, agent: who, kind: "store", unknownWrites: 0 }; run.failures.push(f); }
        f.unknownWrites++;
        f.text = `${who}: ${f.unknownWrites} blackboard write(s) whose outcome is not known (${e.error})`;
      } else {
        run.failures.push({ at: t, agent: who, kind: "store", text: `${who}: blackboard write of '${e.key}' failed: ${e.error}` });
      }
      break;
    }
    case "llm_call":
      run.llm.push({ agent: e.agent || "host", at: t, model: e.model, source: e.source, latency: e.latency_ms,
                     input: e.input_tokens, output: e.output_tokens, error: e.error_kind });
      if (agent) { agent.llmCalls++; agent.tokensIn += e.input_tokens; agent.tokensOut += e.output_tokens; }
      break;
    case "reload":
      run.reloads.push({ at: t, path: e.path, change: e.change, agents: e.agents || [], agent: e.agent });
      break;
    case "reload_refused":
      run.reloads.push({ at: t, path: e.path, refused: true, error: e.error, agent: e.agent });
      break;
    case "handler_failed":
      run.failures.push({ at: t, agent: e.agent || "host", kind: e.error_kind, message: `${e.during}: ${e.message}` });
      break;
    case "error":
      run.errors.push({ at: t, agent: e.agent || "host", kind: e.error_kind, message: e.message, fatal: e.fatal });
      if (agent) agent.errors++;
      break;
  }
}

function el(tag, attrs, text) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function svg(tag, attrs, text) {
  const n = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function titled(node, text) { node.appendChild(svg("title", {}, text)); return node; }

function ms(x) { return x < 10 ? x.toFixed(1) + " ms" : x < 10000 ? Math.round(x) + " ms" : (x / 1000).toFixed(1) + " s"; }

function preview(v) {
  if (v === undefined) return "";
  const s = JSON.stringify(v);
  return s === undefined ? "" : s.length > 120 ? s.slice(0, 117) + "..." : s;
}

function lanesInOrder() {
  return [...run.agents.values()].sort((a, b) => (a.firstAt - b.firstAt) || a.id.localeCompare(b.id));
}

function finalPhase(a) { return a.phases.length ? a.phases[a.phases.length - 1].phase : "INIT"; }

function drawTimeline() {
  const host = document.getElementById("timeline");
  const lanes = lanesInOrder();
  host.textContent = "";
  if (!lanes.length) { host.appendChild(el("div", { class: "empty" }, "no agent yet")); return; }
  const width = Math.max(700, host.clientWidth || 1100);
  const plotW = width - LABEL_W - RIGHT_PAD;
  const t0 = run.t0, span = Math.max(run.tLast - t0, 1);
  const x = (t) => LABEL_W + ((t - t0) / span) * plotW;
  const laneY = new Map();
  lanes.forEach((a, i) => laneY.set(a.id, AXIS_H + i * (LANE_H + LANE_GAP)));
  const height = AXIS_H + lanes.length * (LANE_H + LANE_GAP) + 4;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lanes" });
  const defs = svg("defs");
  const head = svg("marker", { id: "head", viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  head.appendChild(svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#3b5a85" }));
  defs.appendChild(head);
  root.appendChild(defs);

  // Time axis.
  const axis = svg("g", { class: "axis" });
  const step = niceStep(span / 8);
  for (let v = 0; v <= span + 1e-9; v += step) {
    const px = x(t0 + v);
    axis.appendChild(svg("line", { x1: px, x2: px, y1: AXIS_H - 4, y2: height }));
    axis.appendChild(svg("text", { x: px + 2, y: 12 }, ms(v)));
  }
  root.appendChild(axis);

  // Lanes: label, phase segments, markers.
  for (const a of lanes) {
    const y = laneY.get(a.id);
    const final = finalPhase(a);
    const g = svg("g", { class: "lane", "data-agent": a.id, "data-role": a.role, "data-phase": final });
    g.appendChild(svg("rect", { class: "lane-bg", x: LABEL_W, y, width: plotW, height: LANE_H }));
    g.appendChild(svg("text", { class: "lane-label", x: 4, y: y + 16 }, a.id));
    g.appendChild(svg("text", { class: "lane-role", x: 4, y: y + 31 }, a.role + (a.spawnedBy ? " \u2190 " + a.spawnedBy : "")));
    a.phases.forEach((p, i) => {
      const end = i + 1 < a.phases.length ? a.phases[i + 1].at : run.tLast;
      const terminal = p.phase === "COMPLETE" || p.phase === "FAILED";
      const x1 = x(p.at), x2 = terminal ? Math.max(x(end), x1 + 3) : Math.max(x(end), x1 + 1);
      const seg = titled(svg("rect", { class: "seg " + p.phase, "data-phase": p.phase, x: x1, y: y + 8, width: x2 - x1, height: LANE_H - 16 }),
        `${a.id}: ${p.phase} at +${ms(p.at - t0)}` + (p.reason ? ` (${p.reason})` : ""));
      g.appendChild(seg);
    });
    g.appendChild(svg("text", { class: "final " + final, x: LABEL_W + plotW + 6, y: y + 24 }, final));
    if (a.spawnedAt !== null && a.spawnedBy) {
      const sx = x(a.spawnedAt);
      g.appendChild(titled(svg("path", { class: "spawn-mark", d: `M${sx},${y + 2} l4,4 l-4,4 l-4,-4 z` }), `spawned by ${a.spawnedBy}`));
    }
    root.appendChild(g);
  }

  // LLM calls: a bar from the call to its answer, on the caller's lane.
  for (const c of run.llm) {
    if (!laneY.has(c.agent)) continue;
    const y = laneY.get(c.agent), x2 = x(c.at), x1 = Math.min(x(c.at - c.latency), x2 - 2);
    root.appendChild(titled(svg("rect", { class: "llm-mark" + (c.error ? " failed" : ""), x: x1, y: y + LANE_H - 7, width: Math.max(x2 - x1, 2), height: 5 }),
      `chat ${c.model}: ${ms(c.latency)}, ${c.input} in / ${c.output} out tokens` + (c.error ? ` (failed: ${c.error})` : ` (${c.source})`)));
  }

  // Messages: an arrow per delivery from the sender's lane to the taker's;
  // one not taken yet points at its recipient's lane when there is one.
  const arrows = svg("g", { class: "arrows" });
  for (const m of run.messages.values()) {
    if (m.sentAt === null || !laneY.has(m.from)) continue;
    const x1 = x(m.sentAt), y1 = laneY.get(m.from) + LANE_H / 2;
    const label = `${m.type}: ${m.from} \u2192 ${m.to} (${m.id}, ${m.bytes} B)` + (m.payload !== undefined ? "\n" + preview(m.payload) : "");
    const targets = m.deliveries.filter((d) => laneY.has(d.agent));
    if (!targets.length) {
      const to = laneY.has(m.to) ? m.to : lanes.find((a) => a.role === m.to)?.id;
      if (!to) continue;
      const y2 = laneY.get(to) + LANE_H / 2;
      arrows.appendChild(titled(svg("line", { class: "arrow pending", "data-msg": m.id, x1, y1, x2: x(run.tLast), y2, "marker-end": "url(#head)" }), label + "\n(not taken yet)"));
      continue;
    }
    for (const d of targets) {
      const y2 = laneY.get(d.agent) + LANE_H / 2;
      arrows.appendChild(titled(svg("line", { class: "arrow " + d.outcome, "data-msg": m.id, x1, y1, x2: Math.max(x(d.at), x1 + 1), y2, "marker-end": "url(#head)" }),
        label + `\n${d.outcome.replace("_", " ")} by ${d.agent}, attempt ${d.attempt}`));
    }
  }
  root.appendChild(arrows);

  // Errors on their agent's lane; reloads across every lane.
  for (const e of [...run.failures, ...run.errors.filter((e) => e.fatal)]) {
    const y = laneY.has(e.agent) ? laneY.get(e.agent) : AXIS_H;
    const ex = x(e.at);
    root.appendChild(titled(svg("path", { class: "err-mark", d: `M${ex},${y + 1} l5,9 l-10,0 z` }), `${e.fatal ? "fatal " : ""}${e.kind}: ${e.text || e.message}`));
  }
  for (const r of run.reloads) {
    const rx = x(r.at);
    const y1 = r.agent && laneY.has(r.agent) ? laneY.get(r.agent) : AXIS_H;
    const y2 = r.agent && laneY.has(r.agent) ? y1 + LANE_H : height;
    root.appendChild(titled(svg("line", { class: "reload-line" + (r.refused ? " refused" : ""), x1: rx, x2: rx, y1, y2 }),
      r.refused ? `reload of ${r.path} refused: ${r.error}` : `reload ${r.path}: ${r.change}`));
  }
  host.appendChild(root);
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-3))));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function table(headers, rows, numeric) {
  const t = el("table");
  const tr = el("tr");
  headers.forEach((h, i) => tr.appendChild(el("th", numeric && numeric[i] ? { class: "num" } : {}, h)));
  t.appendChild(tr);
  for (const r of rows) {
    const row = el("tr");
    r.forEach((c, i) => row.appendChild(el("td", numeric && numeric[i] ? { class: "num" } : {}, String(c))));
    t.appendChild(row);
  }
  return t;
}

function drawMetrics() {
  const host = document.getElementById("metrics");
  host.textContent = "";
  const lanes = lanesInOrder();
  const rows = lanes.map((a) => [a.id, a.role, finalPhase(a), a.sent, a.handled, a.givenBack + a.dead, a.writes, a.llmCalls, a.tokensIn + a.tokensOut, a.errors]);
  const sum = (k) => lanes.reduce((s, a) => s + a[k], 0);
  rows.push(["all", "", "", sum("sent"), sum("handled"), sum("givenBack") + sum("dead"), sum("writes"), sum("llmCalls"), sum("tokensIn") + sum("tokensOut"), sum("errors")]);
  const t = table(["agent", "role", "phase", "sent", "handled", "failed", "bb writes", "llm", "tokens", "errors"], rows,
    [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
  t.id = "metrics-table";
  host.appendChild(t);
  if (run.metrics) {
    const m = run.metrics;
    host.appendChild(el("p", { class: "muted" },
      `report: ${m.blackboard_writes} blackboard writes, ${m.blackboard_reads} reads, ${m.spawn_events} spawns` +
      (m.host ? `, ${m.host.reloads} reloads, ${m.host.llm_calls} LLM calls, ${m.host.llm_tokens} tokens, ${m.host.lock_waits} lock waits` : "")));
  }
}

function drawLlm() {
  const host = document.getElementById("llm");
  host.textContent = "";
  if (!run.llm.length) { host.appendChild(el("div", { class: "empty" }, "no LLM call")); return; }
  const rows = run.llm.map((c) => ["+" + ms(c.at - run.t0), c.agent, c.model, c.error ? "failed: " + c.error : c.source, ms(c.latency), c.input, c.output]);
  host.appendChild(table(["at", "agent", "model", "source", "latency", "in", "out"], rows, [0, 0, 0, 0, 1, 1, 1]));
}

function drawBlackboard() {
  const host = document.getElementById("blackboard");
  host.textContent = "";
  // A key whose writes all failed holds nothing.
  const keys = [...run.blackboard.keys()].filter((k) => run.blackboard.get(k).some((w) => !w.failed)).sort();
  if (!keys.length) { host.appendChild(el("div", { class: "empty" }, "empty")); return; }
  const t = el("table", { id: "blackboard-table" });
  const head = el("tr");
  ["key", "value", "bytes", "by", "writes"].forEach((h, i) => head.appendChild(el("th", i >= 2 && i !== 3 ? { class: "num" } : {}, h)));
  t.appendChild(head);
  for (const k of keys) {
    const h = run.blackboard.get(k), last = h.findLast((w) => !w.failed);
    const row = el("tr", { class: "key" + (run.selectedKey === k ? " selected" : ""), "data-key": k });
    row.appendChild(el("td", { class: "mono" }, k));
    row.appendChild(el("td", { class: "val" }, last.deleted ? "(deleted)" : last.hasValue ? preview(last.value) : `(${last.bytes} B, too large to journal)`));
    row.appendChild(el("td", { class: "num" }, last.bytes));
    row.appendChild(el("td", {}, last.agent));
    row.appendChild(el("td", { class: "num" }, h.filter((w) => !w.failed).length));
    row.addEventListener("click", () => { run.selectedKey = k; drawBlackboard(); });
    t.appendChild(row);
  }
  host.appendChild(t);
  drawHistory();
}

function drawHistory() {
  const host = document.getElementById("history");
  host.textContent = "";
  const k = run.selectedKey;
  if (k === null || !run.blackboard.has(k)) return;
  host.appendChild(el("h2", {}, `History of ${k}`));
  const rows = run.blackboard.get(k).map((w) => ["+" + ms(w.at - run.t0), w.agent, (w.failed ? `(failed: ${w.error}) ` : "") + (w.deleted ? "(deleted)" : w.hasValue ? preview(w.value) : `(${w.bytes} B)`)]);
  const t = table(["at", "by", "value"], rows);
  t.id = "history-table";
  host.appendChild(t);
}

function drawProblems() {
  const host = document.getElementById("problems");
  host.textContent = "";
  if (!run.errors.length && !run.failures.length && !run.reloads.length) { host.appendChild(el("div", { class: "empty" }, "none")); return; }
  const items = [
    ...run.failures.map((e) => ({ at: e.at, cls: "problem", text: e.text || `${e.agent} failed handling ${e.message}` })),
    ...run.errors.map((e) => ({ at: e.at, cls: "problem" + (e.fatal ? " fatal" : ""), text: `reported: ${e.agent}: [${e.kind}] ${e.message}` })),
    ...run.reloads.map((r) => ({ at: r.at, cls: "problem reload", text: r.refused ? `reload of ${r.path} refused${r.agent ? " by " + r.agent : ""}: ${r.error}` : `reload ${r.path}: ${r.change}` })),
  ].sort((a, b) => a.at - b.at);
  for (const i of items) host.appendChild(el("div", { class: i.cls }, `+${ms(i.at - run.t0)}  ${i.text}`));
}

function drawLog() {
  const host = document.getElementById("log");
  host.textContent = "";
  const shown = run.entries.slice(-500).reverse();
  for (const e of shown) {
    const { seq, at_us, host: h, agent, kind, ...rest } = e;
    const line = `${("+" + ms(at_us / 1000 - run.t0)).padStart(10)}  ${(agent || "host").padEnd(10)} ${kind.padEnd(21)} ${JSON.stringify(rest)}`;
    host.appendChild(el("div", kind === "error" ? { class: "error" } : {}, line));
  }
  document.getElementById("journal-count").textContent = `(${run.entries.length} entries${run.entries.length > 500 ? ", latest 500 shown" : ""})`;
}

function drawHeader() {
  const status = document.getElementById("status");
  const s = run.status || "waiting";
  status.textContent = s;
  status.className = "status " + s;
  if (run.task) {
    document.getElementById("task").textContent = run.task.id;
    document.title = `orrery: ${run.task.id} (${s})`;
  }
  const span = run.t0 === null ? 0 : run.tLast - run.t0;
  document.getElementById("summary").textContent = run.task
    ? `${run.task.type} \u2014 ${run.task.description} \u2014 ${run.agents.size} agents, ${run.messages.size} messages, ${run.llm.length} LLM calls, ${ms(span)} on ${run.hosts.size} host(s)`
    : "";
}

function drawLegend() {
  const host = document.getElementById("legend");
  host.textContent = "";
  for (const p of PHASES) {
    const s = el("span");
    const i = el("i");
    i.style.background = `var(--${p.toLowerCase()})`;
    s.appendChild(i);
    s.appendChild(document.createTextNode(p));
    host.appendChild(s);
  }
  host.appendChild(el("span", {}, "\u2192 message  \u25AC LLM call  \u25B2 error  \u2506 reload"));
}

function render() {
  drawHeader();
  drawTimeline();
  drawMetrics();
  drawLlm();
  drawBlackboard();
  drawProblems();
  drawLog();
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  const go = () => { pending = false; render(); };
  if (document.hidden) setTimeout(go, 250); else requestAnimationFrame(go);
}

function setFeed(state, text) {
  const f = document.getElementById("feed");
  f.className = "feed " + state;
  f.textContent = text;
}

function start() {
  run = freshRun();
  drawLegend();
  const inline = JSON.parse(document.getElementById("journal").textContent || "[]");
  for (const e of inline) ingest(e);
  if (document.body.dataset.mode !== "live") {
    setFeed("static", "report");
    render();
    return;
  }
  setFeed("live", "connecting");
  const source = new EventSource("events");
  // The host says hello on every (re)connection and then sends the whole
  // journal again: start over.
  source.addEventListener("hello", () => { run = freshRun(); setFeed("live", "live"); schedule(); });
  source.addEventListener("message", (m) => { ingest(JSON.parse(m.data)); schedule(); });
  // Nothing more will come: the run ended and its journal closed.
  source.addEventListener("end", () => { source.close(); setFeed("ended", "run over"); render(); });
  source.addEventListener("error", () => { if (source.readyState === EventSource.CLOSED) setFeed("lost", "disconnected"); else setFeed("lost", "reconnecting"); });
  render();
}

window.addEventListener("resize", () => { if (run) schedule(); });
start();
