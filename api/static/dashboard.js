// The supervisor dashboard: seats and queues from the pushed SNAPSHOT and its deltas; the recent
// calls and the chart from REST, on load and when calls end (debounced), never on every event.
"use strict";

(() => {
  const { t, el, SKILLS } = H122;
  const KEY = "h122.supervisorToken";
  const FIELDS = [
    ["waiting", (q) => q.waiting ?? 0],
    ["longest_wait_s", (q) => H122.fmtDuration(q.longest_wait_s ?? 0)],
    ["free", (q) => seatsIn(q, "available")],
    ["ringing", (q) => seatsIn(q, "reserved")],
    ["busy", (q) => seatsIn(q, "on_call")],
    ["wrap_up", (q) => seatsIn(q, "wrap_up")],
    ["not_ready", (q) => seatsIn(q, "not_ready")],
    ["offered", (q) => q.offered ?? 0],
    ["service_level", (q) => H122.fmtPct(q.service_level)],
    ["abandoned", (q) => q.abandoned ?? 0],
    ["fast_share", () => null],  // from the daily report (renderFast)
  ];
  let api = null; let live = null; let seats = []; let queues = []; const state = { refreshes: 0, views: 0 };
  window.h122Dashboard = state;  // read by browser tests: how many call refreshes and view renders

  function seatsIn(q, status) { return (q.seats_by_status || {})[status] || 0; }
  function midnight() { const d = new Date(); d.setHours(0, 0, 0, 0); return d.getTime() / 1000; }

  function buildSkillRows() {
    const body = document.querySelector("#skills tbody");
    body.replaceChildren();
    for (const s of SKILLS) {
      const tr = el("tr", { dataset: { skill: s } }, el("td", { dataset: { skillLabel: s } }, H122.skillLabel(s)));
      for (const [f] of FIELDS) tr.append(el("td", { dataset: { skill: s, field: f } }, "0"));
      body.append(tr);
    }
  }

  function renderQueues(queues) {
    let total = 0;
    for (const q of queues) {
      const tr = document.querySelector(`#skills tr[data-skill="${q.skill}"]`);
      if (!tr) continue;
      for (const [f, fmt] of FIELDS) {
        if (f === "fast_share") continue;
        const td = tr.querySelector(`td[data-field="${f}"]`);
        td.textContent = fmt(q);
        if (f === "waiting") td.dataset.value = String(q.waiting ?? 0);
      }
      tr.querySelector('td[data-field="waiting"]').classList.toggle("num-alert", (q.waiting || 0) > 0);
      total += q.waiting || 0;
    }
    const tw = document.getElementById("total-waiting");
    tw.textContent = String(total); tw.dataset.value = String(total);
  }

  // The centre's headline figure: accident calls fast-handled today (GET /api/v1/reports/daily).
  function fastText(r) {
    if (!r || r.fast_handled_share == null) return t("none");
    return `${H122.fmtPct(r.fast_handled_share)} (${r.fast_handled}/${r.accident_calls})`;
  }

  function renderFast(report) {
    const bySkill = Object.fromEntries((report.skills || []).map((r) => [r.skill, r]));
    document.querySelectorAll('#skills td[data-field="fast_share"]').forEach((td) => {
      const r = bySkill[td.dataset.skill];
      td.textContent = fastText(r); td.dataset.value = r && r.fast_handled_share != null ? String(r.fast_handled_share) : "";
    });
    const tf = document.getElementById("total-fast");
    tf.textContent = fastText(report.total);
    tf.dataset.value = report.total && report.total.fast_handled_share != null ? String(report.total.fast_handled_share) : "";
  }

  function renderSeats() {
    const box = document.getElementById("seats");
    box.replaceChildren();
    for (const s of seats) {
      box.append(el("div", { class: `seat st-${s.status}`, dataset: { seat: s.id, status: s.status, since: s.since ?? "" } },
        el("span", { class: "timer", dataset: { field: "timer" } }, ""),
        el("div", { class: "name" }, s.name || s.id),
        el("div", { dataset: { field: "status" } }, H122.statusLabel(s.status) + (s.reason ? ` (${s.reason})` : "")),
        el("div", { class: "skills" }, Object.keys(s.skills || {}).map(H122.skillLabel).join(" · "))));
    }
    tickTimers();
  }

  function tickTimers() {
    const now = Date.now() / 1000;
    document.querySelectorAll("#seats .seat").forEach((d) => {
      const since = parseFloat(d.dataset.since);
      d.querySelector(".timer").textContent = isFinite(since) ? H122.fmtDuration(now - since) : "";
    });
  }

  function renderCalls(calls) {
    const body = document.querySelector("#calls tbody");
    body.replaceChildren();
    for (const c of calls.slice(0, 20)) {
      const skill = (c.ivr && c.ivr.skill) || c.skill;
      const live = c.seat_answered_at != null && !c.ended_at && !c.end_reason;
      const monitor = el("td", {}, ...(live ? ["listen", "whisper", "barge"].map((m) => {
        const b = el("button", { type: "button", dataset: { monitor: m, call: c.id } }, t("m_" + m));
        b.addEventListener("click", () => startMonitor(c.id, m));
        return b;
      }) : []));
      body.append(el("tr", { dataset: { call: c.id, outcome: c.end_reason || "" } },
        el("td", {}, H122.fmtTime(c.started_at)), el("td", {}, c.caller || t("none")),
        el("td", {}, skill ? H122.skillLabel(skill) : t("none")), el("td", {}, c.seat_id || t("none")),
        el("td", {}, c.end_reason || (c.seat_answered_at ? H122.statusLabel("on_call") : t("waiting"))), monitor));
    }
  }

  // Listen / whisper / barge: the gateway calls the supervisor's phone (POST /api/v1/calls/{id}/monitor).
  async function startMonitor(callId, mode) {
    const out = document.getElementById("monitor-result");
    const contact = document.getElementById("monitor-phone").value.trim();
    localStorage.setItem("h122.monitorPhone", contact);
    try {
      const r = await api.post(`/api/v1/calls/${encodeURIComponent(callId)}/monitor`, { mode, contact });
      out.textContent = `${t("m_" + mode)} ${r.call_id}: ${r.state}`; out.dataset.state = r.state;
    } catch (e) {
      out.textContent = e.detail ? (typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)) : String(e);
      out.dataset.state = "refused";
    }
  }

  // Calls per hour (bars) and service level per hour (line), drawn as inline SVG.
  function renderChart(calls) {
    const W = 480; const H = 180; const pad = 24; const hours = new Array(24).fill(0);
    const answered = new Array(24).fill(0); const inSl = new Array(24).fill(0); const closed = new Array(24).fill(0);
    for (const c of calls) {
      if (c.started_at == null) continue;
      const h = new Date(c.started_at * 1000).getHours();
      hours[h] += 1;
      const q = c.queued_at ?? c.started_at;
      if (c.seat_answered_at != null) {
        answered[h] += 1; closed[h] += 1;
        if (c.seat_answered_at - q <= 20) inSl[h] += 1;
      } else if (c.end_reason === "abandoned") closed[h] += 1;
    }
    const max = Math.max(1, ...hours); const bw = (W - 2 * pad) / 24;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const add = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text != null) n.textContent = text;
      svg.append(n); return n;
    };
    add("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#2a3644" });
    const points = [];
    for (let h = 0; h < 24; h++) {
      const bh = (hours[h] / max) * (H - 2 * pad);
      add("rect", { x: pad + h * bw + 1, y: H - pad - bh, width: bw - 2, height: bh, fill: "#58a6ff",
        "data-hour": h, "data-calls": hours[h] });
      if (h % 3 === 0) add("text", { x: pad + h * bw, y: H - 8, fill: "#8b98a5", "font-size": 10 }, String(h));
      if (closed[h]) points.push(`${pad + h * bw + bw / 2},${H - pad - (inSl[h] / closed[h]) * (H - 2 * pad)}`);
    }
    if (points.length) add("polyline", { points: points.join(" "), fill: "none", stroke: "#2ea043", "stroke-width": 2 });
    add("text", { x: pad, y: 12, fill: "#58a6ff", "font-size": 11 }, `▮ ${t("calls_per_hour")} (max ${max})`);
    add("text", { x: W / 2, y: 12, fill: "#2ea043", "font-size": 11 }, `― ${t("sl")}`);
    document.getElementById("chart").replaceChildren(svg);
  }

  // The call history (recent calls, calls per hour): REST, because it is the database's.
  async function refreshCalls() {
    try {
      const [calls, report] = await Promise.all([
        api.get(`/api/v1/calls?since=${midnight()}&limit=500`), api.get("/api/v1/reports/daily").catch(() => ({}))]);
      renderCalls(calls); renderChart(calls); renderFast(report);
      state.refreshes += 1; document.body.dataset.refreshes = String(state.refreshes);
    } catch (e) {
      if (e.status === 401 || e.status === 403) { logout(t("bad_token")); return; }
      console.error(e);
    }
  }
  const refreshCallsSoon = H122.debounce(refreshCalls, 1000);
  // the recent-calls table (and its listen/whisper/barge buttons on live calls) follows a call's
  // start, its answer by a seat and its end; the queues and seats come pushed
  const CALL_CHANGES = new Set(["CALLSTART", "CONNECT", "COMPLETE", "ABANDON", "CALLEND"]);

  function onViews(board, msg) {
    if (msg.kind !== "SEATS") { queues = [...board.queues.values()]; renderQueues(queues); }
    if (msg.kind !== "QUEUES") {
      seats = [...board.seats.values()].sort((a, b) => a.id.localeCompare(b.id));
      renderSeats();
    }
    state.views += 1; document.body.dataset.views = String(state.views);
  }

  function setLive(ok) {
    const s = document.getElementById("ws-status");
    s.className = ok ? "live" : "dead"; s.dataset.i18n = ok ? "connected" : "disconnected";
    s.textContent = t(s.dataset.i18n);
    if (ok) refreshCallsSoon();
  }

  function start(token) {
    api = H122.client(token);
    document.getElementById("login").classList.add("hidden");
    document.getElementById("board").classList.remove("hidden");
    document.getElementById("logout").classList.remove("hidden");
    buildSkillRows();
    document.getElementById("monitor-phone").value = localStorage.getItem("h122.monitorPhone") || "";
    refreshCalls();
    // a disposition reaches the report once the event writer has stored it: look again a moment later
    live = H122.liveViews(token, { onViews, onState: setLive, onDenied: () => logout(t("bad_token")),
      onEvent: (ev) => {
        if (CALL_CHANGES.has(ev.kind)) refreshCallsSoon();
        if (ev.kind === "DISPOSITION") setTimeout(refreshCallsSoon, 1000);
      } });
  }

  function logout(message) {
    localStorage.removeItem(KEY);
    if (live) live.close();
    document.getElementById("board").classList.add("hidden");
    document.getElementById("logout").classList.add("hidden");
    document.getElementById("login").classList.remove("hidden");
    document.getElementById("login-error").textContent = message || "";
  }

  document.getElementById("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = document.getElementById("token").value.trim();
    try {
      const me = await H122.client(token).get("/api/v1/me");
      if (me.role !== "supervisor" && me.role !== "admin") throw new H122.ApiError(403, "role");
      localStorage.setItem(KEY, token);
      start(token);
    } catch (err) {
      document.getElementById("login-error").textContent = t("bad_token");
    }
  });
  document.getElementById("logout").addEventListener("click", () => logout());
  H122.bindLanguageToggle(() => { if (api) { renderQueues(queues); renderSeats(); refreshCalls(); } });
  setInterval(tickTimers, 1000);
  const saved = localStorage.getItem(KEY);
  if (saved) start(saved); else document.getElementById("login").classList.remove("hidden");
})();
