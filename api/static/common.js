// Shared by the dashboard and the seat console: token storage, REST, WebSocket, labels.
"use strict";

const H122 = (() => {
  const SKILLS = ["intake_guidance", "online_review", "online_determination", "accident_query",
    "video_patrol", "insurance_claim", "rescue", "police_dispatch"];
  const SKILL_ZH = {
    intake_guidance: "接警引导", online_review: "在线审核", online_determination: "在线认定",
    accident_query: "事故查询", video_patrol: "视频巡查", insurance_claim: "保险理赔",
    rescue: "事故救援", police_dispatch: "122接警调度",
  };
  const SKILL_EN = {
    intake_guidance: "Intake guidance", online_review: "Online review", online_determination: "Online liability",
    accident_query: "Accident lookup", video_patrol: "Video patrol", insurance_claim: "Insurance claims",
    rescue: "Rescue", police_dispatch: "122 dispatch",
  };
  const TEXT = {
    zh: {
      title: "122 快处快赔 · 监控台", seat_title: "122 快处快赔 · 坐席", login: "登录", logout: "退出",
      token_prompt: "请输入令牌", skill: "岗位", waiting: "排队", longest: "最长等待", free: "空闲",
      ringing: "振铃", busy: "通话", wrap_up: "整理", not_ready: "未就绪", sl_today: "今日服务水平",
      abandoned_today: "今日放弃", offered_today: "今日呼入", seats: "坐席", calls: "最近来电",
      chart: "今日来电与服务水平", time: "时间", caller: "主叫", seat: "坐席", outcome: "结果",
      connected: "实时连接", disconnected: "连接中断", status: "状态", since: "持续",
      set_ready: "就绪", set_not_ready: "未就绪", end_wrap_up: "结束整理", log_out: "签出",
      reason: "原因", screen_pop: "来电弹屏", ivr_answers: "语音导航应答", priority: "优先级",
      bad_token: "令牌无效或权限不足", total: "合计", calls_per_hour: "每小时来电", sl: "服务水平",
      st_logged_out: "签出", st_available: "空闲", st_not_ready: "未就绪", st_reserved: "振铃",
      st_on_call: "通话中", st_wrap_up: "整理", none: "—",
      r_break: "休息", r_training: "培训", r_meeting: "会议", r_other: "其他",
      why: "转接原因", no_answers: "来电人未回答语音导航问题", requeued: "该来电在上一坐席断开后重新排队",
      monitor: "监听", monitor_phone: "我的话机", m_listen: "监听", m_whisper: "耳语", m_barge: "插话",
      hold: "保持", resume: "恢复通话", transferred_from: "转接自坐席", transfer_note: "转接备注（给下一坐席）", blind_transfer: "转接",
      to_skill: "转岗位", to_seat: "转空闲坐席", no_free_seat: "暂无空闲坐席",
      consult: "咨询转接", consult_complete: "完成转接", consult_cancel: "取回", consult_seat: "坐席号（如 s2）",
      consulting: "咨询中：来电人保持等待", consult_ended: "咨询结束，来电人回到您这里",
      fast_today: "今日快处率", disposition: "通话结果", disp_note: "备注（可选）", disp_saved: "已保存",
      d_fast_handled_online: "线上快处完成", d_insurance_claim_opened: "已报案理赔", d_police_on_scene: "转现场民警",
      d_query_answered: "查询已答复", d_not_road_accident: "非道路交通事故", d_caller_unreachable: "联系不上来电人",
    },
    en: {
      title: "122 Fast Handling · Dashboard", seat_title: "122 Fast Handling · Seat", login: "Log in",
      logout: "Log out", token_prompt: "Enter a token", skill: "Skill", waiting: "Waiting",
      longest: "Longest wait", free: "Free", ringing: "Ringing", busy: "Busy", wrap_up: "Wrap-up",
      not_ready: "Not ready", sl_today: "Service level today", abandoned_today: "Abandoned today",
      offered_today: "Offered today", seats: "Seats", calls: "Recent calls", chart: "Calls and service level today",
      time: "Time", caller: "Caller", seat: "Seat", outcome: "Outcome", connected: "live",
      disconnected: "disconnected", status: "Status", since: "For", set_ready: "Ready",
      set_not_ready: "Not ready", end_wrap_up: "End wrap-up", log_out: "Log out", reason: "Reason",
      screen_pop: "Incoming call", ivr_answers: "IVR answers", priority: "Priority",
      bad_token: "Unknown token or wrong role", total: "Total", calls_per_hour: "Calls per hour", sl: "Service level",
      st_logged_out: "Logged out", st_available: "Available", st_not_ready: "Not ready", st_reserved: "Ringing",
      st_on_call: "On call", st_wrap_up: "Wrap-up", none: "—",
      r_break: "Break", r_training: "Training", r_meeting: "Meeting", r_other: "Other",
      why: "Why here", no_answers: "The caller answered no IVR question", requeued: "Re-queued after the previous seat dropped",
      monitor: "Monitor", monitor_phone: "My phone", m_listen: "Listen", m_whisper: "Whisper", m_barge: "Barge",
      hold: "Hold", resume: "Resume", transferred_from: "Transferred from seat", transfer_note: "Note for the next seat", blind_transfer: "Transfer",
      to_skill: "To a skill", to_seat: "To an available seat", no_free_seat: "No seat is free",
      consult: "Consult", consult_complete: "Complete", consult_cancel: "Cancel", consult_seat: "Seat id (e.g. s2)",
      consulting: "Consulting: the caller is on hold", consult_ended: "Consult over: the caller is back with you",
      fast_today: "Fast-handled today", disposition: "Outcome", disp_note: "Note (optional)", disp_saved: "Saved",
      d_fast_handled_online: "Fast-handled online", d_insurance_claim_opened: "Insurance claim opened",
      d_police_on_scene: "Police on scene", d_query_answered: "Query answered", d_not_road_accident: "Not a road accident",
      d_caller_unreachable: "Caller unreachable",
    },
  };

  let lang = localStorage.getItem("h122.lang") || "zh";

  function t(key) { return (TEXT[lang] && TEXT[lang][key]) || key; }
  function skillLabel(s) { return (lang === "zh" ? SKILL_ZH : SKILL_EN)[s] || s; }
  function statusLabel(s) { return t("st_" + s); }

  function applyLabels(root) {
    (root || document).querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    (root || document).querySelectorAll("[data-skill-label]").forEach((el) => {
      el.textContent = skillLabel(el.dataset.skillLabel);
    });
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  }

  function setLang(l) { lang = l; localStorage.setItem("h122.lang", l); applyLabels(); }
  function getLang() { return lang; }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "dataset") Object.assign(e.dataset, v);
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }

  class ApiError extends Error {
    constructor(status, detail) { super(`${status}: ${JSON.stringify(detail)}`); this.status = status; this.detail = detail; }
  }

  function client(token) {
    async function req(method, path, body) {
      const opts = { method, headers: { Authorization: "Bearer " + token } };
      if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
      const r = await fetch(path, opts);
      const data = r.status === 204 ? null : await r.json().catch(() => null);
      if (!r.ok) throw new ApiError(r.status, data && data.detail);
      return data;
    }
    return {
      get: (p) => req("GET", p),
      put: (p, b) => req("PUT", p, b),
      post: (p, b) => req("POST", p, b),
    };
  }

  // A WebSocket that reconnects with backoff; onEvent gets each parsed event.  The token goes in
  // the first message, never in the URL (URLs end up in logs); the server answers HELLO once it
  // is accepted, or closes with 4401 (bad token: no point retrying; onDenied is told) or 4429.
  function liveEvents(token, onEvent, onState, onDenied) {
    let ws = null; let delay = 500; let stopped = false;
    function open() {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(`${proto}//${location.host}/api/v1/events`, ["handoff122.v1"]);
      ws.onopen = () => { ws.send(JSON.stringify({ type: "auth", token })); };
      ws.onmessage = (m) => {
        let ev = null;
        try { ev = JSON.parse(m.data); } catch (e) { console.error(e); return; }
        if (ev.kind === "HELLO") { delay = 500; onState(true); }
        try { onEvent(ev); } catch (e) { console.error(e); }
      };
      ws.onclose = (c) => {
        onState(false);
        if (c.code === 4401) { stopped = true; if (onDenied) onDenied(c.reason); return; }
        if (!stopped) setTimeout(open, c.code === 4429 ? Math.max(delay, 30000) : delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
    return { close() { stopped = true; if (ws) ws.close(); } };
  }

  // The live views a page renders from: the server's SNAPSHOT (after HELLO, and again after a
  // RESYNC when this page fell behind), then SEATS / QUEUES deltas (changed rows, whole) and the
  // ACD events.  onViews(board, msg) runs after each SNAPSHOT/SEATS/QUEUES with the current
  // board {seats: Map id->row, queues: Map skill->row}; onEvent(ev) gets every other message.
  function liveViews(token, { onViews, onEvent, onState, onDenied }) {
    const board = { seats: new Map(), queues: new Map(), seq: 0 };
    return liveEvents(token, (msg) => {
      switch (msg.kind) {
        case "SNAPSHOT":
          board.seats = new Map(msg.seats.map((s) => [s.id, s]));
          board.queues = new Map(msg.queues.map((q) => [q.skill, q]));
          board.seq = msg.seq; onViews(board, msg); return;
        case "SEATS":
          for (const s of msg.rows) board.seats.set(s.id, s);
          for (const id of msg.removed || []) board.seats.delete(id);
          board.seq = msg.seq; onViews(board, msg); return;
        case "QUEUES":
          for (const q of msg.rows) board.queues.set(q.skill, q);
          board.seq = msg.seq; onViews(board, msg); return;
        case "RESYNC": return;  // a SNAPSHOT follows
        default: if (onEvent) onEvent(msg);
      }
    }, onState, onDenied);
  }

  function debounce(fn, ms) {
    let timer = null;
    return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function fmtDuration(s) {
    if (s == null || !isFinite(s)) return t("none");
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600); const m = Math.floor((s % 3600) / 60); const sec = s % 60;
    const mm = String(m).padStart(2, "0"); const ss = String(sec).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }
  function fmtPct(x) { return x == null ? t("none") : `${Math.round(x * 100)}%`; }
  function fmtTime(ts) {
    if (ts == null) return t("none");
    const d = new Date(ts * 1000);
    return d.toTimeString().slice(0, 8);
  }

  // Both pages: the 中文/EN button shows the other language and re-renders on a switch.
  function bindLanguageToggle(onSwitch) {
    const button = document.getElementById("lang-toggle");
    const label = () => { button.textContent = lang === "zh" ? "EN" : "中文"; };
    button.addEventListener("click", () => { setLang(lang === "zh" ? "en" : "zh"); label(); onSwitch(); });
    applyLabels();
    label();
  }

  return { SKILLS, t, skillLabel, statusLabel, applyLabels, setLang, getLang, el, client, ApiError,
    liveEvents, liveViews, debounce, fmtDuration, fmtPct, fmtTime, bindLanguageToggle };
})();
