// The seat console: own status, ready / not ready / end wrap-up, and the screen pop on an offer.
"use strict";

(() => {
  const { t } = H122;
  const KEY = "h122.seatToken";
  let api = null; let live = null; let seatId = null; let since = null; let popCall = null;

  function showStatus(seat) {
    const st = document.getElementById("seat-status");
    st.dataset.status = seat.status; st.textContent = H122.statusLabel(seat.status);
    document.getElementById("seat-id").textContent = seat.id;
    document.getElementById("seat-name").textContent = seat.name || "";
    document.getElementById("seat-reason").textContent = seat.reason || "";
    since = seat.since;
    tick();
  }

  function tick() {
    const el = document.getElementById("status-timer");
    el.textContent = since == null ? "" : H122.fmtDuration(Date.now() / 1000 - since);
  }

  async function refresh() {
    try { showStatus(await api.get(`/api/v1/seats/${encodeURIComponent(seatId)}`)); } catch (e) { report(e); }
  }

  function report(e) {
    if (e && (e.status === 401)) { logout(t("bad_token")); return; }
    document.getElementById("action-error").textContent = e ? (e.detail ? String(e.detail) : String(e)) : "";
  }

  async function act(fn) {
    document.getElementById("action-error").textContent = "";
    try { showStatus(await fn()); } catch (e) { report(e); }
  }

  // The IVR answers arrive in the OFFER event's ``data.info``; answers is a list of
  // {node, key, ...} (or plain strings); anything else in info is shown as key: value.
  function answerText(a) {
    if (a == null) return "";
    if (typeof a !== "object") return String(a);
    const parts = [];
    const q = a.question || a.prompt || a.node; const k = a.label || a.meaning || a.key || a.digit;
    if (q != null) parts.push(String(q));
    if (k != null) parts.push(String(k));
    return parts.length ? parts.join(": ") : JSON.stringify(a);
  }

  function showPop(ev) {
    const info = (ev.data && ev.data.info) || {};
    popCall = ev.call_id;
    document.getElementById("pop-call-id").textContent = ev.call_id || "";
    document.getElementById("pop-caller").textContent = (ev.data && ev.data.caller) || info.caller || t("none");
    const skill = ev.skill || info.skill;
    document.getElementById("pop-skill").textContent = skill ? H122.skillLabel(skill) : t("none");
    document.getElementById("pop-priority").textContent = info.priority ?? (ev.data && ev.data.priority) ?? t("none");
    const list = document.getElementById("pop-answers");
    list.replaceChildren();
    const answers = Array.isArray(info.answers) ? info.answers
      : Object.entries(info).filter(([k]) => !["caller", "skill", "priority"].includes(k)).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
    for (const a of answers) list.append(H122.el("li", {}, answerText(a)));
    const pop = document.getElementById("screen-pop");
    pop.dataset.call = ev.call_id || ""; pop.classList.remove("hidden");
  }

  function hidePop(callId) {
    if (popCall && callId && callId !== popCall) return;
    document.getElementById("screen-pop").classList.add("hidden");
    popCall = null;
  }

  function onEvent(ev) {
    switch (ev.kind) {
      case "OFFER": showPop(ev); break;
      case "RINGNOANSWER": case "SEATFAILED": case "ABANDON": case "COMPLETE": hidePop(ev.call_id); break;
      default: break;
    }
    if (ev.kind !== "HELLO") refresh();
  }

  function setLive(ok) {
    const s = document.getElementById("ws-status");
    s.className = ok ? "live" : "dead"; s.dataset.i18n = ok ? "connected" : "disconnected";
    s.textContent = t(s.dataset.i18n);
    if (ok && api) refresh();
  }

  function start(token, me) {
    api = H122.client(token); seatId = me.seat_id;
    document.getElementById("seat-login").classList.add("hidden");
    document.getElementById("console").classList.remove("hidden");
    document.getElementById("logout").classList.remove("hidden");
    refresh();
    live = H122.liveEvents(token, onEvent, setLive, () => logout(t("bad_token")));
  }

  function logout(message) {
    localStorage.removeItem(KEY);
    if (live) live.close();
    document.getElementById("console").classList.add("hidden");
    document.getElementById("logout").classList.add("hidden");
    document.getElementById("seat-login").classList.remove("hidden");
    document.getElementById("login-error").textContent = message || "";
  }

  async function login(token) {
    const me = await H122.client(token).get("/api/v1/me");
    if (me.role !== "seat" || !me.seat_id) throw new H122.ApiError(403, "role");
    localStorage.setItem(KEY, token);
    start(token, me);
  }

  const path = () => `/api/v1/seats/${encodeURIComponent(seatId)}`;
  document.getElementById("btn-ready").addEventListener("click", () =>
    act(() => api.put(`${path()}/status`, { status: "available", reason: null })));
  document.getElementById("btn-not-ready").addEventListener("click", () =>
    act(() => api.put(`${path()}/status`, { status: "not_ready", reason: document.getElementById("reason").value })));
  document.getElementById("btn-logged-out").addEventListener("click", () =>
    act(() => api.put(`${path()}/status`, { status: "logged_out", reason: null })));
  document.getElementById("btn-end-wrap-up").addEventListener("click", () =>
    act(() => api.post(`${path()}/wrap-up/end`)));
  document.getElementById("seat-login").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await login(document.getElementById("token").value.trim()); } catch (err) {
      document.getElementById("login-error").textContent = t("bad_token");
    }
  });
  document.getElementById("logout").addEventListener("click", () => logout());
  H122.bindLanguageToggle(() => { if (api) refresh(); });
  setInterval(tick, 1000);
  const saved = localStorage.getItem(KEY);
  if (saved) login(saved).catch(() => logout()); else document.getElementById("seat-login").classList.remove("hidden");
})();
