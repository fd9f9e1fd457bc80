// The seat console: own status, ready / not ready / end wrap-up, and the screen pop on an offer.
"use strict";

(() => {
  const { t } = H122;
  const KEY = "h122.seatToken";
  let api = null; let live = null; let seatId = null; let since = null;

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
    try {
      const seat = await api.get(`/api/v1/seats/${encodeURIComponent(seatId)}`);
      showStatus(seat);
      showDisposition(seat);
      showTransfer(seat);
      showConsult(seat);
      await syncOffer(seat);
    } catch (e) { report(e); }
  }

  // Dispositions: after (or during) a conversation the seat picks how it ended; saving one in
  // wrap-up ends the wrap-up (PUT /api/v1/calls/{id}/disposition). The codes are the node's list.
  let codes = null; let dispCall = null; let chosen = null;

  async function showDisposition(seat) {
    const box = document.getElementById("disposition");
    // a saved outcome stays on screen (with its call id) until the next call comes
    const busy = ["on_call", "wrap_up"].includes(seat.status) && seat.call_id;
    const callId = busy ? seat.call_id : (chosen && seat.status !== "reserved" ? dispCall : null);
    if (!callId) { box.classList.add("hidden"); return; }
    if (codes == null) codes = (await api.get("/api/v1/dispositions")).codes;
    if (dispCall !== callId) {
      dispCall = callId; chosen = null;
      document.getElementById("disp-note").value = "";
      document.getElementById("disp-saved").textContent = "";
    }
    document.getElementById("disp-call").textContent = callId;
    const row = document.getElementById("disp-codes");
    row.replaceChildren(...codes.map((c) => {
      const b = H122.el("button", { type: "button", class: c === chosen ? "disp chosen" : "disp", dataset: { code: c } },
        t("d_" + c) === "d_" + c ? c : t("d_" + c));
      b.addEventListener("click", () => saveDisposition(c));
      return b;
    }));
    document.getElementById("disp-note").placeholder = t("disp_note");
    box.dataset.call = callId; box.classList.remove("hidden");
  }

  // Blind transfer of the caller to another skill (POST /api/v1/calls/{id}/transfer): the caller
  // is never hung up; this seat goes to wrap-up.
  function showTransfer(seat) {
    const box = document.getElementById("transfer");
    const sel = document.getElementById("transfer-skill");
    if (!sel.options.length) renderTargets();
    document.getElementById("transfer-note").placeholder = t("transfer_note");
    box.classList.toggle("hidden", !(seat.status === "on_call" && seat.call_id));
    if (box.dataset.call !== (seat.call_id || "")) {  // a new call starts off hold
      document.getElementById("btn-hold").classList.remove("hidden");
      document.getElementById("btn-resume").classList.add("hidden");
      box.dataset.stage = "talking";
    }
    box.dataset.call = seat.call_id || "";
  }

  // The transfer control's targets: every skill, then the seats that are available now (pushed by
  // the server as TARGETS, and in the SNAPSHOT), this seat left out. A skill's option value is the
  // skill, a seat's "seat:<id>"; transferTarget() turns the choice into the request's target.
  let targets = [];

  function renderTargets() {
    const sel = document.getElementById("transfer-skill");
    const was = sel.value;
    const skills = H122.el("optgroup", { label: t("to_skill") },
      ...H122.SKILLS.map((s) => H122.el("option", { value: s }, H122.skillLabel(s))));
    const others = targets.filter((x) => x.id !== seatId);
    const seats = H122.el("optgroup", { id: "transfer-seats", label: t("to_seat") },
      ...(others.length ? others.map((x) => H122.el("option", { value: `seat:${x.id}`, dataset: { seat: x.id } },
        `${x.id}${x.name ? " " + x.name : ""} · ${Object.keys(x.skills || {}).map(H122.skillLabel).join("、")}`))
        : [H122.el("option", { value: "", disabled: "" }, t("no_free_seat"))]));
    sel.replaceChildren(skills, seats);
    if ([...sel.options].some((o) => o.value === was && !o.disabled)) sel.value = was;
  }

  function onTargets(rows) { targets = rows || []; renderTargets(); }

  // A TARGETS push is a delta (seats that became available or changed, ids that are no longer);
  // the full list comes only in the SNAPSHOT.
  function onTargetsDelta(added, removed) {
    const byId = new Map(targets.map((x) => [x.id, x]));
    (removed || []).forEach((id) => byId.delete(id));
    (added || []).forEach((x) => byId.set(x.id, x));
    onTargets([...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
  }

  function transferTarget() {
    const v = document.getElementById("transfer-skill").value;
    return v.startsWith("seat:") ? { to_seat: v.slice(5) } : { to_skill: v };
  }

  // Hold / resume: the caller hears hold audio, this seat stays on the line (POST .../hold, .../resume).
  async function holdNow(on) {
    const callId = document.getElementById("transfer").dataset.call;
    if (!callId) return;
    document.getElementById("action-error").textContent = "";
    try {
      const r = await api.post(`/api/v1/calls/${encodeURIComponent(callId)}/${on ? "hold" : "resume"}`);
      const held = r.stage === "on_hold";
      document.getElementById("btn-hold").classList.toggle("hidden", held);
      document.getElementById("btn-resume").classList.toggle("hidden", !held);
      document.getElementById("transfer").dataset.stage = r.stage;
    } catch (e) { report(e); }
  }

  async function transferNow() {
    const callId = document.getElementById("transfer").dataset.call;
    if (!callId) return;
    document.getElementById("action-error").textContent = "";
    try {
      const note = document.getElementById("transfer-note").value.trim() || null;
      await api.post(`/api/v1/calls/${encodeURIComponent(callId)}/transfer`,
        { ...transferTarget(), mode: "blind", note });
      document.getElementById("transfer-note").value = "";
      await refresh();
    } catch (e) { report(e); }
  }

  // Warm (consult) transfer: the caller hears hold audio while this seat talks to seat 2, then
  // "complete" hands the caller over (this seat goes to wrap-up) or "cancel" takes them back.
  // POST .../transfer {mode: "warm", to_seat}, .../transfer/complete, .../transfer/cancel.
  function showConsult(seat) {
    const box = document.getElementById("consult");
    document.getElementById("consult-seat").placeholder = t("consult_seat");
    box.classList.toggle("hidden", !(seat.status === "on_call" && seat.call_id));
    if (box.dataset.call !== (seat.call_id || "")) consultStage("talking", "");
    box.dataset.call = seat.call_id || "";
  }

  function consultStage(stage, text) {
    document.getElementById("consult").dataset.stage = stage;
    const on = stage === "consulting";
    document.getElementById("btn-consult").classList.toggle("hidden", on);
    document.getElementById("btn-consult-complete").classList.toggle("hidden", !on);
    document.getElementById("btn-consult-cancel").classList.toggle("hidden", !on);
    document.getElementById("consult-state").textContent = text;
  }

  async function consultNow(action) {
    const callId = document.getElementById("consult").dataset.call;
    if (!callId) return;
    document.getElementById("action-error").textContent = "";
    const base = `/api/v1/calls/${encodeURIComponent(callId)}/transfer`;
    try {
      if (action === "start") {
        const note = document.getElementById("transfer-note").value.trim() || null;
        const r = await api.post(base, { to_seat: document.getElementById("consult-seat").value.trim(), mode: "warm", note });
        consultStage(r.stage, r.stage === "consulting" ? `${t("consulting")} (${r.to_seat})` : "");
      } else {
        const r = await api.post(`${base}/${action}`);
        consultStage(r.stage === "consulting" ? "consulting" : "talking", action === "cancel" ? t("consult_ended") : "");
        await refresh();
      }
    } catch (e) { report(e); }
  }

  async function saveDisposition(code) {
    document.getElementById("action-error").textContent = "";
    const callId = dispCall;
    try {
      const note = document.getElementById("disp-note").value.trim() || null;
      await api.put(`/api/v1/calls/${encodeURIComponent(callId)}/disposition`, { code, note });
      chosen = code;
      const saved = document.getElementById("disp-saved");
      saved.textContent = `${t("disp_saved")}: ${t("d_" + code)}`; saved.dataset.code = code; saved.dataset.call = callId;
      document.querySelectorAll("#disp-codes button").forEach((b) => b.classList.toggle("chosen", b.dataset.code === code));
      await refresh();
    } catch (e) { report(e); }
  }

  function report(e) {
    if (e && (e.status === 401)) { logout(t("bad_token")); return; }
    document.getElementById("action-error").textContent = e ? (e.detail ? String(e.detail) : String(e)) : "";
  }

  async function act(fn) {
    document.getElementById("action-error").textContent = "";
    try { showStatus(await fn()); } catch (e) { report(e); }
  }

  // The screen pop: what the IVR learned, as words. The gateway attaches ``info.screen_pop``
  // (ivr/screen_pop.py) to the call's queue entry: each question with the caller's answer, and
  // the outcome with its reason, each in Chinese and English. The console only renders it.
  let pop = null;   // the offer on screen: {call_id, skill, priority, caller, info}

  function words(w) {
    if (w == null) return "";
    if (typeof w !== "object") return String(w);
    return w[H122.getLang()] || w.zh || w.en || "";
  }

  function renderPop() {
    const el = document.getElementById("screen-pop");
    if (!pop) { el.classList.add("hidden"); el.dataset.call = ""; return; }
    const info = pop.info || {};
    const sp = info.screen_pop || {};
    document.getElementById("pop-call-id").textContent = pop.call_id || "";
    document.getElementById("pop-caller").textContent = pop.caller || info.caller || t("none");
    document.getElementById("pop-skill").textContent = pop.skill ? H122.skillLabel(pop.skill) : t("none");
    document.getElementById("pop-priority").textContent = pop.priority ?? t("none");
    const outcome = sp.outcome || {};
    document.getElementById("pop-why").textContent = words(outcome.why) || t("none");
    document.getElementById("pop-requeued").classList.toggle("hidden", !info.requeued_after);
    // the previous seat's line was lost mid-conversation (seat_media_timeout): which seat
    document.getElementById("pop-requeued-seat").textContent = info.lost_seat ? `(${info.lost_seat})` : "";
    // a transferred call: who sent it and what they wrote for this seat
    document.getElementById("pop-transfer").classList.toggle("hidden", !info.transferred_from);
    document.getElementById("pop-transfer-from").textContent = info.transferred_from || "";
    document.getElementById("pop-transfer-note").textContent = info.transfer_note || "";
    const list = document.getElementById("pop-answers");
    list.replaceChildren();
    for (const a of sp.answers || []) {
      list.append(H122.el("li", {},
        H122.el("span", { class: "question" }, words(a.question)),
        H122.el("span", { class: "answer" }, `${words(a.answer)} (${a.key})`)));
    }
    if (!(sp.answers || []).length) list.append(H122.el("li", { class: "muted" }, t("no_answers")));
    el.dataset.call = pop.call_id || ""; el.classList.remove("hidden");
  }

  function showOffer(offer) { pop = offer; renderPop(); }

  function hidePop(callId) {
    if (pop && callId && callId !== pop.call_id) return;
    pop = null; renderPop();
  }

  // The console's truth is the seat's current call, fetched on every (re)connect (the SNAPSHOT)
  // and whenever its pushed row names a call the pop does not show: an OFFER sent while this page
  // was offline or reconnecting still shows.
  async function syncOffer(seat) {
    if (!seat.call_id || !["reserved", "on_call"].includes(seat.status)) { hidePop(); return; }
    if (pop && pop.call_id === seat.call_id) return;
    try { showOffer(await api.get(`/api/v1/seats/${encodeURIComponent(seatId)}/offer`)); } catch (e) {
      if (e && e.status !== 404) report(e);
    }
  }

  // The seat's own row, pushed: a SNAPSHOT on (re)connect, a SEATS delta when it changes.  A
  // SNAPSHOT also re-checks the offer (syncOffer fetches it when the pop does not show that call).
  function onViews(board, msg) {
    if (msg && msg.kind === "SNAPSHOT" && msg.targets) onTargets(msg.targets);
    const seat = board.seats.get(seatId);
    if (!seat) return;
    showStatus(seat);
    showDisposition(seat);
    showTransfer(seat);
    showConsult(seat);
    syncOffer(seat);
  }

  function onEvent(ev) {
    switch (ev.kind) {
      case "OFFER":
        if (ev.seat_id === seatId) {
          showOffer({ call_id: ev.call_id, skill: ev.skill, priority: ev.data && ev.data.priority,
            caller: ev.data && ev.data.caller, info: (ev.data && ev.data.info) || {} });
        }
        break;
      case "RINGNOANSWER": case "SEATFAILED": case "ABANDON": case "COMPLETE": hidePop(ev.call_id); break;
      case "TARGETS": onTargetsDelta(ev.added, ev.removed); break;
      case "JOURNEY":  // this seat's consult ended by itself (seat 2 did not answer or hung up)
        if (ev.data && ev.data.cause === "consult_cancelled" && ev.seat_id === seatId) {
          consultStage("talking", `${t("consult_ended")}: ${ev.data.detail || ""}`);
        }
        break;
      default: break;
    }
  }

  function setLive(ok) {
    const s = document.getElementById("ws-status");
    s.className = ok ? "live" : "dead"; s.dataset.i18n = ok ? "connected" : "disconnected";
    s.textContent = t(s.dataset.i18n);
  }

  function start(token, me) {
    api = H122.client(token); seatId = me.seat_id;
    document.getElementById("seat-login").classList.add("hidden");
    document.getElementById("console").classList.remove("hidden");
    document.getElementById("logout").classList.remove("hidden");
    refresh();
    live = H122.liveViews(token, { onViews, onEvent, onState: setLive, onDenied: () => logout(t("bad_token")) });
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
  document.getElementById("btn-transfer").addEventListener("click", transferNow);
  document.getElementById("btn-hold").addEventListener("click", () => holdNow(true));
  document.getElementById("btn-resume").addEventListener("click", () => holdNow(false));
  document.getElementById("btn-consult").addEventListener("click", () => consultNow("start"));
  document.getElementById("btn-consult-complete").addEventListener("click", () => consultNow("complete"));
  document.getElementById("btn-consult-cancel").addEventListener("click", () => consultNow("cancel"));
  document.getElementById("seat-login").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await login(document.getElementById("token").value.trim()); } catch (err) {
      document.getElementById("login-error").textContent = t("bad_token");
    }
  });
  document.getElementById("logout").addEventListener("click", () => logout());
  H122.bindLanguageToggle(() => { renderPop(); renderTargets(); if (api) refresh(); });
  setInterval(tick, 1000);
  const saved = localStorage.getItem(KEY);
  if (saved) login(saved).catch(() => logout()); else document.getElementById("seat-login").classList.remove("hidden");
})();
