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
// A person claiming from the dashboard holds the task for a day (the longest lease), as a take
// from an email does by default; progress renews it.
const PERSON_LEASE = 86400;
// Most tasks one board column shows.
const COLUMN_LIMIT = 200;
// Most log text kept on the page.
const LOG_KEEP = 256 * 1024;
const EVENT_KINDS = [
  "task.created", "task.updated", "task.ready", "task.claimed", "task.progress", "task.completed",
  "task.failed", "task.released", "task.lease_expired", "task.stalled", "task.blocked",
  "task.unblocked", "task.cancelled", "task.routed", "run.started", "run.exited",
  "agent.created", "agent.online", "agent.offline", "agent.deactivated", "agent.token_rotated",
  "agent.deleted", "notification.sent", "notification.failed",
  "loop.ran",
  "reservation.created", "reservation.released",
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

// What a routing decision did, as the server words it in `why` (a wait says it itself).
const ROUTED = { human: "sent to people", spawn: "spawned", pull: "left for agents to pull" };

// An event of a task's timeline as a sentence.
function eventText(e) {
  const d = e.data || {};
  const who = e.actor || "taskyard";
  const fence = d.fence != null ? ` (fence ${d.fence})` : "";
  switch (e.kind) {
    case "task.created": return `${who} created it${d.status ? `: ${String(d.status).replace("_", " ")}` : ""}${d.reason ? ` — ${d.reason}` : ""}`;
    case "task.updated": return `${who} edited ${(d.fields || []).join(", ")}`;
    case "task.ready": return `ready: its dependencies are completed`;
    case "task.claimed": return `claimed by ${d.holder}${fence}, attempt ${d.attempt}`;
    case "task.progress": return `${who}: ${d.percent != null ? `${d.percent}%` : ""}${d.note ? ` — ${d.note}` : ""}`;
    case "task.completed": return `completed by ${who}${d.summary ? `: ${d.summary}` : ""}`;
    case "task.failed": return `${d.final ? "failed for good" : "attempt failed, to be retried"}: ${d.reason}`;
    case "task.released": return `released by ${who}${d.note ? `: ${d.note}` : ""}`;
    case "task.lease_expired": return `the lease of ${d.holder}${fence} expired${d.final ? "; no attempts left" : ""}`;
    case "task.stalled": return `stalled: no progress from ${d.holder} since ${d.last_progress_at}`;
    case "task.blocked": return `blocked${d.holder ? ` by ${who}` : ""}: ${d.reason}`;
    case "task.unblocked": return `${who} lifted the block${d.note ? `: ${d.note}` : ""}`;
    case "task.cancelled": return `cancelled by ${who}${d.via_parent ? ` with its parent #${d.via_parent}` : ""}${d.note ? `: ${d.note}` : ""}`;
    case "task.routed": return d.decision ? (ROUTED[d.decision] ? `${ROUTED[d.decision]}: ${d.reason}` : d.reason) : d.reason;
    case "run.started": return `run #${d.run_id} of ${d.agent_type} started (pid ${d.pid})`;
    case "reservation.created": return `${d.holder} reserved ${(d.paths || []).join(" ")}${d.exclusive ? "" : " (shared)"}${fence}`;
    case "reservation.released": return `${d.holder} no longer reserves ${(d.paths || []).join(" ")}: ${d.reason}`;
    case "run.exited": return `run #${d.run_id} ended: ${String(d.status).replace("_", " ")}${d.error ? ` — ${d.error}` : ""}`;
    default: return `${e.kind} ${who} ${JSON.stringify(d)}`;
  }
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
    edited.clear();
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
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const [stats, system, loops, runs, nodes] = await Promise.all([
      api("GET", "/stats"), api("GET", "/system"), api("GET", "/loops"), api("GET", "/runs?status=running&limit=100"),
      api("GET", "/nodes"),
    ]);
    const host = system.latest;
    const failing = loops.items.filter((l) => l.last_run && !l.last_run.ok);
    const counts = STATUSES.map((s) => `<div><span class="num">${stats.by_status[s] ?? 0}</span> ${statusText(s)}</div>`).join("");
    const prios = PRIORITIES.map((p) => `<div><span class="num">${stats.open_by_priority[p] ?? 0}</span> ${pill(p, p)}</div>`).join("");
    data.innerHTML = `
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
      <section aria-labelledby="h-nodes"><h2 id="h-nodes">Nodes</h2>
      ${table(["Node", "Version", "Leader", "Last heartbeat", "Started"], nodes.nodes.map((n) => [
        `${esc(n.id)}${n.id === nodes.this_node ? ` <span class="muted">(this page's)</span>` : ""}`, esc(n.version),
        n.leader ? pill("leader", "ok") : "", when(n.last_heartbeat), when(n.started_at),
      ]), "No node has beaten lately.")}</section>
      <section aria-labelledby="h-chart"><h2 id="h-chart">Claims and completions, last hour</h2>${chart(stats.per_minute)}</section>
      <section aria-labelledby="h-running"><h2 id="h-running">Running agent processes</h2>
      ${table(["Run", "Task", "Agent type", "Node", "PID", "CPU", "Memory", "Started"], runs.items.map((r) => [
        `<a href="#/runs/${r.id}">#${r.id}</a>`, `<a href="#/tasks/${r.task_id}">#${r.task_id}</a>`, esc(r.agent_type),
        esc(r.node || "—"), esc(r.pid ?? "—"), r.cpu_percent == null ? "—" : `${r.cpu_percent.toFixed(0)}%`, mib(r.memory_bytes), when(r.started_at),
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
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const form = Object.fromEntries(new FormData(document.getElementById("filters")));
    const pages = await Promise.all(STATUSES.map((status) => api("GET", `/tasks${qs({ ...form, status, limit: COLUMN_LIMIT })}`)));
    const columns = STATUSES.map((s, i) => {
      const tasks = pages[i].items;
      return `<section class="col" aria-labelledby="col-${s}"><h2 id="col-${s}">${statusText(s)} <span class="muted">${tasks.length}${pages[i].next_cursor ? "+" : ""}</span></h2>
        ${tasks.map((t) => `<a class="task" href="#/tasks/${t.id}" data-task="${t.id}">${pill(t.priority, t.priority)}${pill(t.kind)}
          <div>#${t.id} ${esc(t.title)}</div>${t.lease ? `<div class="muted">${esc(t.lease.holder)}</div>` : ""}</a>`).join("")}</section>`;
    }).join("");
    const more = pages.some((p) => p.next_cursor);
    data.innerHTML = `<div class="board">${columns}</div>
      ${more ? `<p class="muted">Columns show their newest ${COLUMN_LIMIT}; narrow the filters to see others.</p>` : ""}`;
  },
};

views.task = {
  title: "Task",
  mount(id) {
    view.innerHTML = `<p><a href="#/board">← Board</a></p><div id="data"></div>`;
    this.id = id;
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const id = this.id;
    const [t, why, subtasks, reserved] = await Promise.all([
      api("GET", `/tasks/${id}`), api("GET", `/tasks/${id}/why`), api("GET", `/tasks${qs({ parent_id: id, limit: 500 })}`),
      api("GET", `/reservations${qs({ task: id })}`),
    ]);
    document.title = `#${t.id} ${t.title} · taskyard`;
    this.related = new Set([...why.dependencies, ...why.dependents, ...subtasks.items].map((d) => d.id));
    if (t.parent_id) this.related.add(t.parent_id);
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
      ["Paths", t.paths.map((p) => `<code>${esc(p)}</code>`).join(" ") || "—"],
      ["Attempts", `${t.attempts} of ${t.max_attempts}`],
      ["Lease", t.lease ? `${esc(t.lease.holder)}, fence ${t.lease.fence}, until ${when(t.lease.expires_at)}` : "—"],
      ["Progress", `${t.progress.percent}%${t.progress.note ? ` — ${esc(t.progress.note)}` : ""}`],
      ["Parent", t.parent_id ? `<a href="#/tasks/${t.parent_id}">#${t.parent_id}</a>` : "—"],
      ["Created", `${when(t.created_at)} by ${esc(t.created_by ?? "—")}`], ["Updated", when(t.updated_at)],
      ["Claimed", when(t.claimed_at)], ["Completed", when(t.completed_at)],
    ];
    data.innerHTML = `
      <h1>#${t.id} ${esc(t.title)}</h1>
      <div class="actions" id="actions">
        ${open && t.status !== "in_progress" ? `<div><label for="a-priority">priority</label><select id="a-priority">${PRIORITIES.map((p) => `<option ${p === t.priority ? "selected" : ""}>${p}</option>`).join("")}</select></div>
          <button type="button" data-act="priority">Set priority</button>` : ""}
        ${t.status === "available" ? `<button type="button" class="primary" data-act="claim">Claim it myself</button>` : ""}
        ${t.status === "blocked" ? `<button type="button" data-act="unblock">Unblock</button>` : ""}
        ${mine ? `<div><label for="a-summary">summary</label><input id="a-summary" placeholder="what was done"></div>
          <button type="button" class="primary" data-act="complete">Complete</button>` : ""}
        ${open && ROLE === "admin" ? `<button type="button" data-act="reroute" title="forget the router's decision and route it again">Route afresh</button>` : ""}
        ${open ? `<button type="button" class="danger" data-act="cancel">Cancel task</button>` : ""}
      </div>
      <dl class="fields">${fields.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>
      <h2>Description</h2>${t.description ? `<pre>${esc(t.description)}</pre>` : `<p class="muted">None.</p>`}
      <h2>Acceptance criteria</h2>${t.acceptance_criteria.length ? `<ul>${t.acceptance_criteria.map((c) => `<li>${esc(c)}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`}
      <h2>Why</h2><ul>${why.reasons.map((r) => `<li>${esc(r)}</li>`).join("")}</ul>
      ${why.decisions.length ? `<h3>Decisions</h3><ul class="timeline">${why.decisions.map((d) => `<li>${when(d.at)} ${esc(d.text)}</li>`).join("")}</ul>` : ""}
      <h2>Reservations</h2>${reserved.items.length ? `<ul id="reservations">${reserved.items.map((r) => `<li>#${r.id} ${esc(r.holder)} (fence ${r.fence}, ${r.exclusive ? "exclusive" : "shared"}): ${r.paths.map((p) => `<code>${esc(p)}</code>`).join(" ")}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`}
      <h2>Dependencies</h2>${list(why.dependencies)}
      <h2>Dependents</h2>${list(why.dependents)}
      <h2>Subtasks</h2>${list(subtasks.items)}
      <h2>Progress notes</h2>${notes.length ? `<ul class="timeline">${notes.map((e) => `<li>${when(e.at)} ${esc(e.actor)}: ${esc(e.data.percent ?? "")}${e.data.percent != null ? "% — " : ""}${esc(e.data.note)}</li>`).join("")}</ul>` : `<p class="muted">None.</p>`}
      <h2>Result</h2>${result ? `<p>${esc(result.summary)}</p>${result.deliverables.length ? `<ul>${result.deliverables.map((d) => `<li>${esc(d.kind)}: ${esc(d.ref)}${d.note ? ` — ${esc(d.note)}` : ""}</li>`).join("")}</ul>` : ""}` : `<p class="muted">Not completed.</p>`}
      <h2>Timeline</h2><ul class="timeline">${t.events.slice().reverse().map((e) => `<li>${when(e.at)} ${esc(eventText(e))}</li>`).join("")}</ul>`;
    data.querySelector("#actions").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-act]");
      if (!button) return;
      const what = button.dataset.act;
      act(button, async () => {
        if (what === "priority") await api("PATCH", `/tasks/${id}`, { priority: document.getElementById("a-priority").value });
        if (what === "claim") await api("POST", `/tasks/${id}/claim`, { lease_seconds: PERSON_LEASE });
        if (what === "unblock") await api("POST", `/tasks/${id}/unblock`, {});
        if (what === "cancel") await api("POST", `/tasks/${id}/cancel`, {});
        if (what === "reroute") await api("POST", `/tasks/${id}/reroute`, {});
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
          await api("POST", `/tasks/${id}/claim`, { lease_seconds: PERSON_LEASE });
        }
        if (what === "decline") await api("POST", `/queue/${id}/decline`, {});
      });
    });
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const queue = await api("GET", "/queue");
    data.innerHTML = table(["Priority", "Task", "Status", "Kind", "Offered to", ""], queue.items.map(({ task: t, offered_to }) => [
      pill(t.priority, t.priority), taskLink(t), `${statusText(t.status)}${t.status_reason ? `<div class="muted">${esc(t.status_reason)}</div>` : ""}`,
      esc(t.kind), esc(offered_to ?? "—"),
      `<button type="button" class="primary" data-act="take" data-id="${t.id}" data-status="${esc(t.status)}">Take</button>
       ${offered_to ? `<button type="button" data-act="decline" data-id="${t.id}">Decline</button>` : ""}`,
    ]), "Nothing waits on people.");
  },
};

views.agents = {
  title: "Agents",
  mount() {
    view.innerHTML = `<h1>Agents</h1><div id="data"></div>`;
    document.getElementById("data").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-deactivate]");
      if (button) act(button, () => api("POST", `/agents/${button.dataset.deactivate}/deactivate`, {}));
    });
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const agents = await api("GET", "/agents");
    const status = { online: "ok", deactivated: "bad" };
    data.innerHTML = table(["Name", "Kind", "Role", "Status", "Capabilities", "Last seen", ""], agents.items.map((a) => [
      esc(a.name), esc(a.kind), esc(a.role), `<span class="${status[a.status] ?? "muted"}">${esc(a.status)}</span>`,
      a.capabilities.map((c) => pill(c)).join(""), when(a.last_seen),
      ROLE === "admin" && a.status !== "deactivated"
        ? `<button type="button" class="danger" data-deactivate="${a.id}" aria-label="Deactivate ${esc(a.name)}"
             title="its token stops working and its leases are released">Deactivate</button>` : "",
    ]), "No agents registered.");
  },
};

views.runs = {
  title: "Runs",
  mount() {
    view.innerHTML = `<h1>Runs</h1><div id="data"></div>`;
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const runs = await api("GET", "/runs?limit=200");
    data.innerHTML = table(["Run", "Task", "Agent type", "Status", "PID", "CPU", "Memory", "Started", "Ended", "Exit", "Error"], runs.items.map((r) => [
      `<a href="#/runs/${r.id}">#${r.id}</a>`, `<a href="#/tasks/${r.task_id}">#${r.task_id}</a>`, esc(r.agent_type), esc(r.status),
      esc(r.pid ?? "—"), r.cpu_percent == null ? "—" : `${r.cpu_percent.toFixed(0)}%`, mib(r.memory_bytes), when(r.started_at),
      when(r.ended_at), esc(r.exit_code ?? "—"), r.error ? `<span class="run-error">${esc(r.error)}</span>` : "—",
    ]), "No runs yet.");
  },
};

views.run = {
  title: "Run",
  mount(id) {
    this.id = id;
    view.innerHTML = `<p><a href="#/runs">← Runs</a></p><div id="data"></div><h2>Log</h2><pre id="log" aria-live="off"></pre>`;
    this.data = document.getElementById("data");
    logFollowing = false;
  },
  async refresh() {
    const data = this.data;
    const r = await api("GET", `/runs/${this.id}`);
    if (!logFollowing && data.isConnected) followLog(this.id, document.getElementById("log"));
    const live = r.status === "starting" || r.status === "running";
    data.innerHTML = `<h1>Run #${r.id} — ${esc(r.agent_type)}</h1>
      <div class="actions">${live && ROLE === "admin" ? `<button type="button" class="danger" id="kill">Kill</button>` : ""}</div>
      <dl class="fields"><dt>Status</dt><dd>${esc(r.status)}${r.error ? ` — ${esc(r.error)}` : ""}</dd>
      <dt>Task</dt><dd><a href="#/tasks/${r.task_id}">#${r.task_id}</a></dd><dt>PID</dt><dd>${esc(r.pid ?? "—")}</dd>
      <dt>CPU / memory</dt><dd>${r.cpu_percent == null ? "—" : `${r.cpu_percent.toFixed(0)}%`} / ${mib(r.memory_bytes)}</dd>
      <dt>Started</dt><dd>${when(r.started_at)}</dd><dt>Ended</dt><dd>${when(r.ended_at)}</dd><dt>Exit code</dt><dd>${esc(r.exit_code ?? "—")}</dd></dl>`;
    const kill = data.querySelector("#kill");
    if (kill) kill.addEventListener("click", () => act(kill, () => api("POST", `/runs/${r.id}/kill`, {})));
  },
};

let logAbort = null;
let logFollowing = false;

// Streams a run's log into `pre` until the run ends or the page moves on, keeping the last
// LOG_KEEP characters. A log that does not exist yet is retried by the next refresh.
async function followLog(id, pre) {
  if (logAbort) logAbort.abort();
  logAbort = new AbortController();
  logFollowing = true;
  let text = "";
  try {
    const response = await fetch(`/api/v1/runs/${id}/log?follow=true&tail=65536`, { credentials: "same-origin", signal: logAbort.signal });
    if (!response.ok) {
      pre.textContent = `(no log yet: ${response.statusText})`;
      logFollowing = false;
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      text += decoder.decode(value, { stream: true });
      if (text.length > LOG_KEEP) text = text.slice(text.length - LOG_KEEP);
      pre.textContent = text;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (err) {
    if (err.name !== "AbortError") pre.textContent = `${text}\n(log stream ended: ${err.message})`;
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
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const loops = await api("GET", "/loops");
    data.innerHTML = table(["Loop", "Kind", "Schedule", "Last run", "Failures", "Next run", ""], loops.items.map((l) => [
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
  mount() {
    view.innerHTML = `<h1>Notifications</h1><div id="data"></div>`;
    this.data = document.getElementById("data");
  },
  async refresh() {
    const data = this.data;
    const page = await api("GET", "/notifications?limit=200");
    data.innerHTML = table(["#", "Status", "Reason", "Task", "To", "Subject", "Attempts", "Last error", "Queued", "Sent", "Action"], page.items.map((n) => [
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
let generation = 0;
let inflight = null;
let inflightGen = -1;
let again = false;
// Ids of form fields the person changed since the view was drawn: a refresh keeps their values.
const edited = new Set();

view.addEventListener("input", (e) => { if (e.target.id) edited.add(e.target.id); });

// Refreshes the current view; a refresh asked for while one runs is done once it ends. A
// refresh that finishes after the person moved on draws into the page it started on.
async function refresh() {
  if (!current) return;
  const gen = generation;
  if (inflight && inflightGen === gen) {
    again = true;
    return inflight;
  }
  const active = current;
  const focused = document.activeElement && view.contains(document.activeElement) ? document.activeElement.id : "";
  const kept = [...edited].map((id) => [id, document.getElementById(id)?.value]);
  inflightGen = gen;
  inflight = (async () => {
    try {
      await active.view.refresh();
      if (gen !== generation) return;
      for (const [id, value] of kept) {
        const field = document.getElementById(id);
        if (field && value !== undefined) field.value = value;
      }
      if (focused) document.getElementById(focused)?.focus();
    } catch (err) {
      if (gen === generation) flash(err.message);
    }
  })();
  const mine = inflight;
  await mine;
  if (inflight === mine) inflight = null;
  if (again && gen === generation) {
    again = false;
    await refresh();
  }
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
  generation += 1;
  again = false;
  edited.clear();
  current = { view: v, arg };
  flash("");
  v.mount(arg);
  refresh();
}

// Which events concern the view on screen.
function concerns(event) {
  const v = current && current.view;
  if (!v) return false;
  const kind = event.kind || "";
  if (v === views.task) return event.task_id === Number(v.id) || (v.related || new Set()).has(event.task_id) || kind === "task.created";
  if (v === views.overview) return true;
  if (v === views.board) return kind.startsWith("task.");
  if (v === views.queue) return kind.startsWith("task.") || kind.startsWith("notification.");
  if (v === views.agents) return kind.startsWith("agent.");
  if (v === views.runs || v === views.run) return kind.startsWith("run.");
  if (v === views.loops) return kind === "loop.ran";
  if (v === views.notifications) return kind.startsWith("notification.");
  return true;
}

let liveTimer = null;
let retry = 1000;

// Follows the event stream; a relevant event refreshes the view at most 150 ms later, however
// many follow. When the stream closes for good (the session ended) the next call sends the
// person to the login page; otherwise it reconnects.
function connect() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/v1/events");
  events.onopen = () => {
    live.classList.add("on");
    retry = 1000;
    refresh();
  };
  events.onerror = () => {
    live.classList.remove("on");
    if (events.readyState === EventSource.CLOSED) {
      api("GET", "/stats").catch(() => {});
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    }
  };
  const changed = (message) => {
    let event = {};
    try { event = JSON.parse(message.data); } catch (_) { /* keep-alive or unknown */ }
    if (!concerns(event)) return;
    if (!liveTimer) liveTimer = setTimeout(() => { liveTimer = null; refresh(); }, 150);
  };
  for (const kind of EVENT_KINDS) events.addEventListener(kind, changed);
}

window.addEventListener("hashchange", navigate);
navigate();
connect();
