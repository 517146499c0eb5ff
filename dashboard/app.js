// taskyard dashboard: one page, hash routes, the REST API with the session cookie, and live
// updates from the event stream (no polling). Every mutation sends the session's CSRF token.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF = meta("csrf-token");
const USER = meta("user");
const ROLE = meta("role");
const view = document.getElementById("view");
const flashBox = document.getElementById("flash");

const STATUSES = ["pending", "available", "in_progress", "blocked", "completed", "failed", "cancelled"];
const PRIORITIES = ["P0", "P1", "P2", "P3"];
const EVENT_KINDS = [
  "task.created", "task.updated", "task.ready", "task.claimed", "task.progress", "task.completed",
  "task.failed", "task.released", "task.lease_expired", "task.stalled", "task.blocked",
  "task.unblocked", "task.cancelled", "task.routed", "run.started", "run.exited",
  "agent.created", "agent.online", "agent.offline", "notification.sent", "notification.failed",
  "loop.ran",
];

// ---------------------------------------------------------------- helpers

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return `<time datetime="${esc(ts)}" title="${esc(ts)}">${esc(d.toLocaleString())}</time>`;
}

function mib(bytes) {
  return bytes == null ? "—" : `${(bytes / 1048576).toFixed(0)} MiB`;
}

function pill(text, cls = "") {
  return `<span class="pill ${esc(cls)}">${esc(text)}</span>`;
}

function statusText(status) {
  return `<span class="status-${esc(status)}">${esc(String(status).replace("_", " "))}</span>`;
}

function taskLink(t) {
  return `<a href="#/tasks/${t.id}">#${t.id} ${esc(t.title)}</a>`;
}

function flash(message) {
  flashBox.textContent = message || "";
  if (message) setTimeout(() => { if (flashBox.textContent === message) flashBox.textContent = ""; }, 8000);
}

async function api(method, path, body) {
  const response = await fetch(`/api/v1${path}`, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? { "x-csrf-token": CSRF } : { "content-type": "application/json", "x-csrf-token": CSRF },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    location.assign("/login");
    throw new Error("the session has ended");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.status === 204 ? null : response.json();
}

// Runs a mutation from a button, then refreshes the view (the event stream refreshes it too).
async function act(button, work) {
  button.disabled = true;
  try {
    await work();
    flash("");
    await refresh();
  } catch (err) {
    flash(err.message);
  } finally {
    button.disabled = false;
  }
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

function table(headers, rows, empty = "Nothing here.") {
  if (!rows.length) return `<p class="muted">${esc(empty)}</p>`;
  return `<div class="scroll"><table><thead><tr>${headers.map((h) => `<th scope="col">${esc(h)}</th>`).join("")}</tr></thead>
    <tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`;
}

// ---------------------------------------------------------------- views
// Each view has mount (builds the page once per visit) and refresh (reloads its data); the
// event stream calls refresh, so forms and the log being followed are left alone.

const views = {};

views.overview = {
  title: "Overview",
  mount() {
    view.innerHTML = `<h1>Overview</h1><div id="data"></div>`;
  },
  async refresh() {
    const [stats, system, loops, runs] = await Promise.all([
      api("GET", "/stats"), api("GET", "/system"), api("GET", "/loops"), api("GET", "/runs?status=running&limit=100"),
    ]);
    const host = system.latest;
    const failing = loops.items.filter((l) => l.last_run && !l.last_run.ok);
    const counts = STATUSES.map((s) => `<div><span class="num">${stats.by_status[s] ?? 0}</span> ${statusText(s)}</div>`).join("");
    const prios = PRIORITIES.map((p) => `<div><span class="num">${stats.open_by_priority[p] ?? 0}</span> ${pill(p, p)}</div>`).join("");
    document.getElementById("data").innerHTML = `
      <div class="grid">
        <section class="card" aria-labelledby="h-status"><h2 id="h-status">Tasks by status</h2><div class="grid">${counts}</div></section>
        <section class="card" aria-labelledby="h-prio"><h2 id="h-prio">Open tasks by priority</h2><div class="grid">${prios}</div></section>
        <section class="card" aria-labelledby="h-agents"><h2 id="h-agents">Agents</h2>
          <p><span class="num">${stats.agents_online}</span> online of ${stats.agents}</p>
          <p><span class="num">${stats.live_runs}</span> agent processes running</p></section>
        <section class="card" aria-labelledby="h-host"><h2 id="h-host">Host</h2>${host ? `
          <p class="${host.overloaded ? "bad" : "ok"}">${host.overloaded ? `overloaded: ${esc(host.reasons.join("; "))}` : "healthy"}</p>
          <p>CPU ${host.cpu_percent.toFixed(0)}% · memory ${mib(host.memory_used_bytes)} of ${mib(host.memory_total_bytes)}
          · disk free ${mib(host.disk_free_bytes)}</p>` : `<p class="muted">not sampled yet</p>`}</section>
        <section class="card" aria-labelledby="h-loops"><h2 id="h-loops">Loops</h2>
          <p class="${failing.length ? "bad" : "ok"}">${failing.length ? `${failing.length} failing: ${failing.map((l) => esc(l.name)).join(", ")}` : `all ${loops.items.length} healthy`}</p>
          <p><a href="#/loops">Details</a></p></section>
      </div>
      <section aria-labelledby="h-chart"><h2 id="h-chart">Claims and completions, last hour</h2>${chart(stats.per_minute)}</section>
      <section aria-labelledby="h-running"><h2 id="h-running">Running agent processes</h2>
      ${table(["Run", "Task", "Agent type", "PID", "CPU", "Memory", "Started"], runs.items.map((r) => [
        `<a href="#/runs/${r.id}">#${r.id}</a>`, `<a href="#/tasks/${r.task_id}">#${r.task_id}</a>`, esc(r.agent_type),
        esc(r.pid ?? "—"), r.cpu_percent == null ? "—" : `${r.cpu_percent.toFixed(0)}%`, mib(r.memory_bytes), when(r.started_at),
      ]), "No agent processes are running.")}</section>`;
  },
};

function chart(minutes) {
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.claimed, m.completed)));
  const w = 10;
  const bars = minutes.map((m, i) => {
    const hc = (m.claimed / max) * 120;
    const hd = (m.completed / max) * 120;
    return `<rect class="c" x="${i * w}" y="${125 - hc}" width="4" height="${hc}"><title>${esc(new Date(m.minute).toLocaleTimeString())}: ${m.claimed} claimed</title></rect>
      <rect class="d" x="${i * w + 4.5}" y="${125 - hd}" width="4" height="${hd}"><title>${esc(new Date(m.minute).toLocaleTimeString())}: ${m.completed} completed</title></rect>`;
  }).join("");
  const total = (k) => minutes.reduce((a, m) => a + m[k], 0);
  return `<svg class="chart" viewBox="0 0 ${minutes.length * w} 130" preserveAspectRatio="none" role="img"
    aria-label="${total("claimed")} claims and ${total("completed")} completions in the last hour">${bars}</svg>
    <p class="legend"><span class="c">claimed (${total("claimed")})</span><span class="d">completed (${total("completed")})</span> · peak ${max} per minute</p>`;
}

views.board = {
  title: "Board",
  mount() {
    const select = (name, values) => `<div><label for="f-${name}">${name}</label><select id="f-${name}" name="${name}">
      <option value="">any</option>${values.map((v) => `<option>${esc(v)}</option>`).join("")}</select></div>`;
    const input = (name, label) => `<div><label for="f-${name}">${label}</label><input id="f-${name}" name="${name}" type="search"></div>`;
    view.innerHTML = `<h1>Board</h1>
      <form class="filters" id="filters" role="search">
        ${input("q", "search")}${input("project", "project")}${select("priority", PRIORITIES)}
        ${input("kind", "kind")}${input("capability", "capability")}${select("route", ["auto", "agent", "human", "spawn"])}
      </form><div id="data"></div>`;
    let timer;
    document.getElementById("filters").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    });
    document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  },
  async refresh() {
    const form = new FormData(document.getElementById("filters"));
    const page = await api("GET", `/tasks${qs({ ...Object.fromEntries(form), limit: 500 })}`);
    const columns = STATUSES.map((s) => {
      const tasks = page.items.filter((t) => t.status === s);
      return `<section class="col" aria-labelledby="col-${s}"><h2 id="col-${s}">${statusText(s)} <span class="muted">${tasks.length}</span></h2>
        ${tasks.map((t) => `<a class="task" href="#/tasks/${t.id}" data-task="${t.id}">${pill(t.priority, t.priority)}${pill(t.kind)}
          <div>#${t.id} ${esc(t.title)}</div>${t.lease ? `<div class="muted">${esc(t.lease.holder)}</div>` : ""}</a>`).join("")}</section>`;
    }).join("");
    document.getElementById("data").innerHTML = `<div class="board">${columns}</div>
      ${page.next_cursor ? `<p class="muted">Showing the newest 500; narrow the filters to see others.</p>` : ""}`;
  },
};

views.task = {
  title: "Task",
  mount(id) {
    view.innerHTML = `<p><a href="#/board">← Board</a></p><div id="data"></div>`;
    this.id = id;
  },
  async refresh() {
    const id = this.id;
    const [t, why, subtasks] = await Promise.all([
      api("GET", `/tasks/${id}`), api("GET", `/tasks/${id}/why`), api("GET", `/tasks${qs({ parent_id: id, limit: 500 })}`),
    ]);
    document.title = `#${t.id} ${t.title} · taskyard`;
    const list = (items) => items.length ? `<ul>${items.map((d) => `<li>${taskLink(d)} — ${statusText(d.status)}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`;
    const notes = t.events.filter((e) => e.kind === "task.progress" && e.data.note);
    const result = t.result;
    const open = ["pending", "available", "in_progress", "blocked"].includes(t.status);
    const mine = t.lease && t.lease.holder === USER;
    const fields = [
      ["Status", `${statusText(t.status)}${t.status_reason ? ` — ${esc(t.status_reason)}` : ""}`],
      ["Priority", pill(t.priority, t.priority)], ["Kind", esc(t.kind)], ["Project", esc(t.project)],
      ["Key", esc(t.key ?? "—")], ["Route", esc(t.route)],
      ["Capabilities", t.capabilities.map((c) => pill(c)).join("") || "—"],
      ["Attempts", `${t.attempts} of ${t.max_attempts}`],
      ["Lease", t.lease ? `${esc(t.lease.holder)}, fence ${t.lease.fence}, until ${when(t.lease.expires_at)}` : "—"],
      ["Progress", `${t.progress.percent}%${t.progress.note ? ` — ${esc(t.progress.note)}` : ""}`],
      ["Parent", t.parent_id ? `<a href="#/tasks/${t.parent_id}">#${t.parent_id}</a>` : "—"],
      ["Created", `${when(t.created_at)} by ${esc(t.created_by ?? "—")}`], ["Updated", when(t.updated_at)],
      ["Claimed", when(t.claimed_at)], ["Completed", when(t.completed_at)],
    ];
    document.getElementById("data").innerHTML = `
      <h1>#${t.id} ${esc(t.title)}</h1>
      <div class="actions" id="actions">
        ${open && t.status !== "in_progress" ? `<div><label for="a-priority">priority</label><select id="a-priority">${PRIORITIES.map((p) => `<option ${p === t.priority ? "selected" : ""}>${p}</option>`).join("")}</select></div>
          <button type="button" data-act="priority">Set priority</button>` : ""}
        ${t.status === "available" ? `<button type="button" class="primary" data-act="claim">Claim it myself</button>` : ""}
        ${t.status === "blocked" ? `<button type="button" data-act="unblock">Unblock</button>` : ""}
        ${mine ? `<div><label for="a-summary">summary</label><input id="a-summary" placeholder="what was done"></div>
          <button type="button" class="primary" data-act="complete">Complete</button>` : ""}
        ${open ? `<button type="button" class="danger" data-act="cancel">Cancel task</button>` : ""}
      </div>
      <dl class="fields">${fields.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>
      <h2>Description</h2>${t.description ? `<pre>${esc(t.description)}</pre>` : `<p class="muted">None.</p>`}
      <h2>Acceptance criteria</h2>${t.acceptance_criteria.length ? `<ul>${t.acceptance_criteria.map((c) => `<li>${esc(c)}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`}
      <h2>Why</h2><ul>${why.reasons.map((r) => `<li>${esc(r)}</li>`).join("")}</ul>
      ${why.decisions.length ? `<ul class="muted">${why.decisions.map((d) => `<li>${esc(d.decision ?? "")}: ${esc(d.reason ?? JSON.stringify(d))}</li>`).join("")}</ul>` : ""}
      <h2>Dependencies</h2>${list(why.dependencies)}
      <h2>Dependents</h2>${list(why.dependents)}
      <h2>Subtasks</h2>${list(subtasks.items)}
      <h2>Progress notes</h2>${notes.length ? `<ul class="timeline">${notes.map((e) => `<li>${when(e.at)} ${esc(e.actor)}: ${esc(e.data.percent ?? "")}${e.data.percent != null ? "% — " : ""}${esc(e.data.note)}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`}
      <h2>Result</h2>${result ? `<p>${esc(result.summary)}</p>${result.deliverables.length ? `<ul>${result.deliverables.map((d) => `<li>${esc(d.kind)}: ${esc(d.ref)}${d.note ? ` — ${esc(d.note)}` : ""}</li>`).join("")}</ul>` : ""}` : `<p class="muted">Not completed.</p>`}
      <h2>Timeline</h2><ul class="timeline">${t.events.slice().reverse().map((e) => `<li>${when(e.at)} <b>${esc(e.kind)}</b> ${esc(e.actor ?? "")}
        <span class="muted">${esc(JSON.stringify(e.data))}</span></li>`).join("")}</ul>`;
    document.getElementById("actions").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-act]");
      if (!button) return;
      const what = button.dataset.act;
      act(button, async () => {
        if (what === "priority") await api("PATCH", `/tasks/${id}`, { priority: document.getElementById("a-priority").value });
        if (what === "claim") await api("POST", `/tasks/${id}/claim`, {});
        if (what === "unblock") await api("POST", `/tasks/${id}/unblock`, {});
        if (what === "cancel") await api("POST", `/tasks/${id}/cancel`, {});
        if (what === "complete") {
          await api("POST", `/tasks/${id}/complete`, { fence: t.lease.fence, summary: document.getElementById("a-summary").value || "done" });
        }
      });
    });
  },
};

views.queue = {
  title: "Manual queue",
  mount() {
    view.innerHTML = `<h1>Manual queue</h1><p class="muted">Work waiting on a person: routed to people, or blocked on a decision.</p><div id="data"></div>`;
    document.getElementById("data").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-act]");
      if (!button) return;
      const { act: what, id, status } = button.dataset;
      act(button, async () => {
        if (what === "take") {
          if (status === "blocked") await api("POST", `/tasks/${id}/unblock`, { note: "taken from the dashboard" });
          await api("POST", `/tasks/${id}/claim`, {});
        }
        if (what === "decline") await api("POST", `/queue/${id}/decline`, {});
      });
    });
  },
  async refresh() {
    const queue = await api("GET", "/queue");
    document.getElementById("data").innerHTML = table(["Priority", "Task", "Status", "Kind", "Offered to", ""], queue.items.map(({ task: t, offered_to }) => [
      pill(t.priority, t.priority), taskLink(t), `${statusText(t.status)}${t.status_reason ? `<div class="muted">${esc(t.status_reason)}</div>` : ""}`,
      esc(t.kind), esc(offered_to ?? "—"),
      `<button type="button" class="primary" data-act="take" data-id="${t.id}" data-status="${esc(t.status)}">Take</button>
       ${offered_to ? `<button type="button" data-act="decline" data-id="${t.id}">Decline</button>` : ""}`,
    ]), "Nothing waits on people.");
  },
};

views.agents = {
  title: "Agents",
  mount() { view.innerHTML = `<h1>Agents</h1><div id="data"></div>`; },
  async refresh() {
    const agents = await api("GET", "/agents");
    document.getElementById("data").innerHTML = table(["Name", "Kind", "Role", "Status", "Capabilities", "Last seen"], agents.items.map((a) => [
      esc(a.name), esc(a.kind), esc(a.role), `<span class="${a.status === "online" ? "ok" : "muted"}">${esc(a.status)}</span>`,
      a.capabilities.map((c) => pill(c)).join(""), when(a.last_seen),
    ]), "No agents registered.");
  },
};

views.runs = {
  title: "Runs",
  mount() { view.innerHTML = `<h1>Runs</h1><div id="data"></div>`; },
  async refresh() {
    const runs = await api("GET", "/runs?limit=200");
    document.getElementById("data").innerHTML = table(["Run", "Task", "Agent type", "Status", "PID", "CPU", "Memory", "Started", "Ended", "Exit"], runs.items.map((r) => [
      `<a href="#/runs/${r.id}">#${r.id}</a>`, `<a href="#/tasks/${r.task_id}">#${r.task_id}</a>`, esc(r.agent_type), esc(r.status),
      esc(r.pid ?? "—"), r.cpu_percent == null ? "—" : `${r.cpu_percent.toFixed(0)}%`, mib(r.memory_bytes), when(r.started_at),
      when(r.ended_at), esc(r.exit_code ?? "—"),
    ]), "No runs yet.");
  },
};

views.run = {
  title: "Run",
  mount(id) {
    this.id = id;
    view.innerHTML = `<p><a href="#/runs">← Runs</a></p><div id="data"></div><h2>Log</h2><pre id="log" aria-live="off"></pre>`;
    followLog(id, document.getElementById("log"));
  },
  async refresh() {
    const r = await api("GET", `/runs/${this.id}`);
    const live = r.status === "starting" || r.status === "running";
    document.getElementById("data").innerHTML = `<h1>Run #${r.id} — ${esc(r.agent_type)}</h1>
      <div class="actions">${live && ROLE === "admin" ? `<button type="button" class="danger" id="kill">Kill</button>` : ""}</div>
      <dl class="fields"><dt>Status</dt><dd>${esc(r.status)}${r.error ? ` — ${esc(r.error)}` : ""}</dd>
      <dt>Task</dt><dd><a href="#/tasks/${r.task_id}">#${r.task_id}</a></dd><dt>PID</dt><dd>${esc(r.pid ?? "—")}</dd>
      <dt>CPU / memory</dt><dd>${r.cpu_percent == null ? "—" : `${r.cpu_percent.toFixed(0)}%`} / ${mib(r.memory_bytes)}</dd>
      <dt>Started</dt><dd>${when(r.started_at)}</dd><dt>Ended</dt><dd>${when(r.ended_at)}</dd><dt>Exit code</dt><dd>${esc(r.exit_code ?? "—")}</dd></dl>`;
    const kill = document.getElementById("kill");
    if (kill) kill.addEventListener("click", () => act(kill, () => api("POST", `/runs/${r.id}/kill`, {})));
  },
};

let logAbort = null;

// Streams a run's log into `pre` until the run ends or the page moves on.
async function followLog(id, pre) {
  logAbort = new AbortController();
  try {
    const response = await fetch(`/api/v1/runs/${id}/log?follow=true&tail=65536`, { credentials: "same-origin", signal: logAbort.signal });
    if (!response.ok) { pre.textContent = `(no log: ${response.statusText})`; return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += decoder.decode(value, { stream: true });
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (err) {
    if (err.name !== "AbortError") pre.textContent += `\n(log stream ended: ${err.message})`;
  }
}

views.loops = {
  title: "Loops",
  mount() {
    view.innerHTML = `<h1>Loops</h1><div id="data"></div>`;
    document.getElementById("data").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-loop]");
      if (button) act(button, () => api("POST", `/loops/${encodeURIComponent(button.dataset.loop)}/run`, {}));
    });
  },
  async refresh() {
    const loops = await api("GET", "/loops");
    document.getElementById("data").innerHTML = table(["Loop", "Kind", "Schedule", "Last run", "Failures", "Next run", ""], loops.items.map((l) => [
      `${esc(l.name)}${l.enabled ? "" : ` <span class="muted">(disabled)</span>`}`, esc(l.kind), esc(l.schedule),
      l.last_run ? `<span class="${l.last_run.ok ? "ok" : "bad"}">${l.last_run.ok ? "ok" : "failed"}</span> ${when(l.last_run.finished_at)}
        <div class="muted">${esc(l.last_run.summary)}</div>` : `<span class="muted">never</span>`,
      l.failures ? `<span class="bad">${l.failures}</span>` : "0", when(l.next_run_at),
      ROLE === "admin" ? `<button type="button" data-loop="${esc(l.name)}" ${l.running ? "disabled" : ""}>${l.running ? "Running…" : "Run now"}</button>` : "",
    ]));
  },
};

views.notifications = {
  title: "Notifications",
  mount() { view.innerHTML = `<h1>Notifications</h1><div id="data"></div>`; },
  async refresh() {
    const page = await api("GET", "/notifications?limit=200");
    document.getElementById("data").innerHTML = table(["#", "Status", "Reason", "Task", "To", "Subject", "Attempts", "Last error", "Queued", "Sent", "Action"], page.items.map((n) => [
      n.id, `<span class="${n.status === "sent" ? "ok" : n.status === "failed" ? "bad" : "warn"}">${esc(n.status)}</span>`, esc(n.reason),
      n.task_id ? `<a href="#/tasks/${n.task_id}">#${n.task_id}</a>` : "—", esc(n.to), esc(n.subject), n.attempts,
      esc(n.last_error ?? ""), when(n.created_at), when(n.sent_at), esc(n.action ?? ""),
    ]), "No notifications yet.");
  },
};

// ---------------------------------------------------------------- routing and live updates

const ROUTES = [
  [/^#\/tasks\/(\d+)$/, "task", "#/board"],
  [/^#\/board$/, "board", "#/board"],
  [/^#\/queue$/, "queue", "#/queue"],
  [/^#\/agents$/, "agents", "#/agents"],
  [/^#\/runs\/(\d+)$/, "run", "#/runs"],
  [/^#\/runs$/, "runs", "#/runs"],
  [/^#\/loops$/, "loops", "#/loops"],
  [/^#\/notifications$/, "notifications", "#/notifications"],
];

let current = null;
let refreshing = null;
let again = false;

async function refresh() {
  if (!current) return;
  if (refreshing) { again = true; return refreshing; }
  const active = current;
  refreshing = (async () => {
    try {
      await active.view.refresh();
    } catch (err) {
      flash(err.message);
    }
  })();
  await refreshing;
  refreshing = null;
  if (again && current === active) { again = false; await refresh(); }
}

function navigate() {
  const hash = location.hash || "#/";
  let name = "overview";
  let arg;
  let nav = "#/";
  for (const [re, viewName, navHash] of ROUTES) {
    const m = hash.match(re);
    if (m) { name = viewName; arg = m[1]; nav = navHash; break; }
  }
  if (logAbort) { logAbort.abort(); logAbort = null; }
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const v = views[name];
  document.title = `${v.title} · taskyard`;
  current = { view: v, arg };
  flash("");
  v.mount(arg);
  again = false;
  refresh();
}

let liveTimer = null;

function connect() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/v1/events");
  events.onopen = () => live.classList.add("on");
  events.onerror = () => live.classList.remove("on");
  const changed = () => {
    clearTimeout(liveTimer);
    liveTimer = setTimeout(refresh, 150);
  };
  for (const kind of EVENT_KINDS) events.addEventListener(kind, changed);
}

window.addEventListener("hashchange", navigate);
navigate();
connect();
