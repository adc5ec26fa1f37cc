// chatd moderation console: the queue of cases, a case page, the audit log and live alerts.
//
// Plain script, no framework and no build step: the page runs under a CSP without
// 'unsafe-inline' or 'unsafe-eval'. Every string that came from a user (usernames, notes,
// message text, reasons) reaches the DOM as a text node or through textContent; this file
// never assigns innerHTML. The session token lives in sessionStorage, never in a cookie.
"use strict";

(() => {
  // -- constants ----------------------------------------------------------------------------

  const SUBPROTOCOL = "chatd.v1.json";
  const TOKEN_KEY = "chatd.console.token"; // sessionStorage: gone when the tab closes
  const SOUND_KEY = "chatd.console.sound"; // localStorage: a preference, not a secret
  const RECONNECT_MIN_MS = 500; // first wait before reconnecting the event stream (ms)
  const RECONNECT_MAX_MS = 15000; // longest wait between reconnects (ms)
  const PING_EVERY_MS = 25000; // keeps idle proxies from closing the stream (ms)
  const AGE_REFRESH_MS = 15000; // how often the "age" cells are recomputed (ms)
  const TOAST_MS = 5000;
  const SOUND_GAP_MS = 2000; // at most one tone in this long, however many cases arrive (ms) // how long a status message stays (ms)
  const FRESH_MS = 10 * 60 * 1000; // a new case keeps its tint this long unless seen (ms)
  const ALERT_LINKED_SHOWN = 6; // linked accounts listed in one alert; the rest as a count
  const QUEUE_LIMIT = 500; // reports fetched per status (the API's largest page)
  const ALERTS_LIMIT = 50; // recent alerts shown when the console opens
  const ALERTS_KEPT = 200; // alerts kept in the side panel; older ones drop off
  const AUDIT_LIMIT = 200;
  const TIMESTAMP_FLOOR = 1e12; // a number in a detail above this is a time (ms, after 2001) // audit entries fetched at once (the API allows up to 1000)
  const PRIORITY_HIGH = 90; // a score from here up shows red (threat's base score)
  const PRIORITY_MID = 50; // from here up amber; below, grey
  const NOTE_CHARS = 2000; // longest note a resolution may carry (code points)
  const DETAIL_CACHE = 20; // report details (snapshots) kept in memory, newest first

  const CATEGORY_LABEL = {
    minor_sexual: "minor sexual",
    sexual: "sexual",
    harassment: "harassment",
    threat: "threat",
    fake_account: "fake account",
    ban_evasion: "ban evasion",
    spam: "spam",
    other: "other",
  };
  // How grave a category is, for its colour only; the order comes from the server.
  const CATEGORY_SEVERITY = {
    minor_sexual: "sev-high",
    threat: "sev-high",
    sexual: "sev-mid",
    harassment: "sev-mid",
    fake_account: "sev-mid",
    ban_evasion: "sev-mid",
    spam: "sev-low",
    other: "sev-low",
  };
  // The reason prefilled for warn, kick and ban. The member sees it: no detail of the report.
  const CATEGORY_REASON = {
    minor_sexual: "Sexual contact with a minor is not allowed.",
    sexual: "Unwanted sexual contact is not allowed.",
    harassment: "Harassing other members is not allowed.",
    threat: "Threatening other members is not allowed.",
    fake_account: "False age or identity is not allowed.",
    ban_evasion: "Coming back after a ban is not allowed.",
    spam: "Spam is not allowed.",
    other: "Breach of the community rules.",
  };
  const ACTIONED = new Set(["warned", "kicked", "banned", "police"]);
  const ALERT_LABEL = {
    ban_evasion: "Ban evasion",
    registration_surge: "Registration surge",
    contact_burst: "Contact burst",
  };
  // Keys on the case page and the resolution each one asks to confirm.
  const CASE_KEYS = { w: "warned", x: "kicked", b: "banned", d: "dismissed" };
  const RESOLUTION_VERB = {
    warned: "Warn",
    kicked: "Kick",
    banned: "Ban",
    police: "Escalate to police",
    dismissed: "Dismiss",
  };

  // -- state --------------------------------------------------------------------------------

  const state = {
    token: null,
    me: null,
    ws: null,
    wsGeneration: 0, // bumps on every (re)connect so stale sockets' events are dropped
    reconnectMs: RECONNECT_MIN_MS,
    reconnectTimer: null,
    pingTimer: null,
    subscribed: false,
    loading: false,
    pendingEvents: [], // mod.event frames that arrived while the queue was loading
    reports: new Map(), // report id -> report, every open or claimed one
    known: new Map(), // report id -> report, also resolved ones seen this session
    cases: [], // sorted, built from `reports`
    cursor: null, // case id selected in the queue
    fresh: new Map(), // case id -> when it arrived live (ms), until seen
    flash: new Set(), // case ids whose row should play the arrival cue once
    rows: new Map(), // case id -> <tr>
    view: null,
    caseId: null,
    selectedReport: null,
    details: new Map(), // report id -> {report with snapshot}
    accounts: new Map(), // user id -> GET /api/mod/users/{id} body (a promise of it)
    staleAccounts: new Set(), // user ids acted on since they were read
    userId: null,
    alerts: 0,
    alertIds: new Set(), // alert ids shown, so a listed one heard live is not shown twice
    sound: false,
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  // -- DOM helpers: text only ---------------------------------------------------------------

  // h("td", {class: "x", testid: "y"}, child, "text", ...): strings become text nodes.
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else if (key === "testid") node.dataset.testid = value;
        else if (key === "data") Object.assign(node.dataset, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  // -- formatting ---------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");

  function fmtTime(ts) {
    if (typeof ts !== "number") return "";
    const d = new Date(ts);
    const now = new Date();
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === now.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms.slice(0, 5)}`;
  }

  function fmtFull(ts) {
    return typeof ts === "number" ? new Date(ts).toISOString() : "";
  }

  function fmtSpan(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m`;
    const hr = Math.floor(m / 60);
    if (hr < 48) return `${hr}h`;
    const d = Math.floor(hr / 24);
    if (d < 365) return `${d}d`;
    return `${(d / 365).toFixed(1)}y`;
  }

  function fmtPriority(p) {
    if (typeof p !== "number") return p === undefined || p === null ? "–" : String(p);
    return Number.isInteger(p) ? String(p) : p.toFixed(1);
  }

  const categoryLabel = (c) => CATEGORY_LABEL[c] || String(c || "–");
  // The server's score bands: minor_sexual starts at 100, threat at 90, sexual at 60.
  const band = (p) => (typeof p !== "number" ? "sev-low" : p >= PRIORITY_HIGH ? "sev-high" : p >= PRIORITY_MID ? "sev-mid" : "sev-low");
  // The category has a column of its own; "category x" would only repeat it.
  const shownReasons = (reasons) => reasons.filter((r) => !/^category /.test(String(r)));
  const severity = (c) => CATEGORY_SEVERITY[c] || "sev-low";
  const who = (u) => (u && u.username ? String(u.username) : u && u.id ? `#${u.id}` : "–");

  function userLink(u) {
    if (!u || !Number.isInteger(u.id)) return h("span", { class: "user" }, who(u));
    return h("a", { class: "user", href: `#user/${u.id}`, title: `account #${u.id}` }, who(u));
  }

  function ageBadge(age) {
    if (typeof age !== "number") return null;
    return h("span", { class: age < 18 ? "age age-minor" : "age", title: "age" }, String(age));
  }

  function chip(text, cls) {
    return h("span", { class: `chip ${cls || ""}` }, text);
  }

  // -- toasts -------------------------------------------------------------------------------

  let toastTimer = null;
  function toast(text, kind) {
    const node = $("toast");
    node.textContent = text;
    node.className = `toast ${kind === "error" ? "toast-error" : ""}`;
    node.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      node.hidden = true;
    }, TOAST_MS);
  }

  // -- HTTP ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || code || `HTTP ${status}`);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "network", "The server did not answer.");
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (err) {
        data = null;
      }
    }
    if (!response.ok) {
      const e = (data && data.error) || {};
      const error = new ApiError(response.status, e.code, e.message);
      if (response.status === 401 && path !== "/api/login") endSession("Your session has ended. Log in again.");
      else if (response.status === 403 && e.code === "forbidden" && path.startsWith("/api/mod/reports") && !state.subscribed) {
        notModerator();
      }
      throw error;
    }
    return data;
  }

  // -- login and session --------------------------------------------------------------------

  function showLogin(message) {
    $("app").hidden = true;
    $("login-view").hidden = false;
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("login-password").value = "";
    $("login-username").focus();
  }

  function showApp() {
    $("login-view").hidden = true;
    $("app").hidden = false;
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    $("main").focus({ preventScroll: true });
  }

  async function onLogin(event) {
    event.preventDefault();
    const button = event.submitter || $("login-form").querySelector("button");
    button.disabled = true;
    try {
      const data = await api("POST", "/api/login", {
        username: $("login-username").value.trim(),
        password: $("login-password").value,
      });
      startSession(data.token, data.user);
    } catch (err) {
      const msg = err.code === "bad_credentials" ? "Wrong username or password." : err.message;
      showLogin(err.code === "banned" ? "This account is banned." : msg);
    } finally {
      button.disabled = false;
    }
  }

  function startSession(token, user) {
    state.token = token;
    state.me = user || null;
    sessionStorage.setItem(TOKEN_KEY, token);
    renderMe();
    showApp();
    connect();
    route();
  }

  function resetData() {
    state.reports.clear();
    state.known.clear();
    state.details.clear();
    state.accounts.clear();
    state.staleAccounts.clear();
    state.fresh.clear();
    state.flash.clear();
    state.rows.clear();
    state.cases = [];
    state.cursor = null;
    state.pendingEvents = [];
    clear($("queue-body"));
    clear($("alerts"));
    clear($("activity"));
    state.alerts = 0;
    state.alertIds = new Set();
    $("alert-count").textContent = "0";
    $("alerts-empty").hidden = false;
    $("activity-empty").hidden = false;
  }

  // Forget the token and go back to the login form with `message`.
  function endSession(message) {
    state.token = null;
    state.me = null;
    state.subscribed = false;
    sessionStorage.removeItem(TOKEN_KEY);
    disconnect();
    resetData();
    for (const d of document.querySelectorAll("dialog[open]")) d.close();
    showLogin(message);
  }

  function notModerator() {
    const token = state.token;
    endSession("This account is not a moderator. The console is for moderators and admins only.");
    // Drop the session the member just opened here; the answer does not matter.
    if (token) fetch("/api/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  }

  async function logout() {
    const token = state.token;
    endSession("");
    if (token) {
      try {
        await fetch("/api/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
      } catch (err) {
        // The token is forgotten here either way.
      }
    }
  }

  function renderMe() {
    const me = $("me");
    clear(me);
    if (state.me) append(me, [who(state.me), " ", chip(state.me.role || "", "chip-role")]);
  }

  // -- the live event stream ----------------------------------------------------------------

  function setConn(stateName, text) {
    const node = $("conn-status");
    node.dataset.state = stateName;
    node.textContent = text;
  }

  function connect() {
    disconnect();
    const generation = ++state.wsGeneration;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    setConn("connecting", "connecting");
    const ws = new WebSocket(`${scheme}//${location.host}/ws`, SUBPROTOCOL);
    state.ws = ws;
    const send = (frame) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
    };
    ws.addEventListener("open", () => send({ t: "auth", token: state.token, rid: "auth" }));
    ws.addEventListener("message", (event) => {
      if (generation !== state.wsGeneration) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (frame && typeof frame === "object") onFrame(frame, send);
    });
    ws.addEventListener("close", (event) => {
      if (generation !== state.wsGeneration) return;
      onClose(event.code);
    });
  }

  function disconnect() {
    state.wsGeneration++;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.pingTimer);
    state.subscribed = false;
    if (state.ws) {
      try {
        state.ws.close(1000);
      } catch (err) {
        // already closed
      }
    }
    state.ws = null;
  }

  function onFrame(frame, send) {
    switch (frame.t) {
      case "ready":
        state.me = frame.user || state.me;
        renderMe();
        send({ t: "mod.subscribe", rid: "sub" });
        break;
      case "mod.subscribed":
        state.subscribed = true;
        state.reconnectMs = RECONNECT_MIN_MS;
        setConn("live", "live");
        clearInterval(state.pingTimer);
        state.pingTimer = setInterval(() => send({ t: "ping" }), PING_EVERY_MS);
        loadQueue(); // after subscribing, so nothing falls between the list and the stream
        break;
      case "mod.event":
        if (frame.event) {
          if (state.loading) state.pendingEvents.push(frame.event);
          else onEvent(frame.event, true);
        }
        break;
      case "error":
        if (frame.rid === "sub" && frame.code === "forbidden") notModerator();
        else if (frame.code === "unauthenticated") endSession("Your session has ended. Log in again.");
        break;
      case "kicked":
        state.kickedReason = frame.reason;
        break;
      default:
        break; // pong and frames this page does not use
    }
  }

  function onClose(code) {
    clearInterval(state.pingTimer);
    state.subscribed = false;
    state.ws = null;
    if (!state.token) return;
    const reason = state.kickedReason ? ` Reason: ${state.kickedReason}` : "";
    state.kickedReason = null;
    if (code === 4001) return endSession("Your session has ended. Log in again.");
    if (code === 4004) return endSession(`This account was banned.${reason}`);
    if (code === 4003) return endSession(`You were signed out by a moderator.${reason}`);
    if (code === 1000) return endSession("You were logged out.");
    setConn("down", "reconnecting…");
    const wait = state.reconnectMs;
    state.reconnectMs = Math.min(RECONNECT_MAX_MS, state.reconnectMs * 2);
    state.reconnectTimer = setTimeout(connect, wait);
  }

  // -- the queue: data ----------------------------------------------------------------------

  async function loadQueue() {
    state.loading = true;
    try {
      const [open, claimed] = await Promise.all([
        api("GET", `/api/mod/reports?status=open&limit=${QUEUE_LIMIT}`),
        api("GET", `/api/mod/reports?status=claimed&limit=${QUEUE_LIMIT}`),
      ]);
      state.reports.clear();
      for (const r of [...(open.reports || []), ...(claimed.reports || [])]) putReport(r);
      $("queue-updated").textContent = `loaded ${fmtTime(Date.now())}`;
    } catch (err) {
      if (state.token) toast(`Could not load the queue: ${err.message}`, "error");
    } finally {
      state.loading = false;
    }
    const pending = state.pendingEvents;
    state.pendingEvents = [];
    for (const event of pending) onEvent(event, false);
    rebuildCases();
    if (state.view === "case") renderCase();
    loadAlerts();
  }

  // The recent alerts (GET /api/mod/alerts, an extension); live ones follow as mod.event.
  async function loadAlerts() {
    let data;
    try {
      data = await api("GET", `/api/mod/alerts?limit=${ALERTS_LIMIT}`);
    } catch (err) {
      return; // an older server without the listing: the panel fills live
    }
    clear($("alerts"));
    state.alerts = 0;
    state.alertIds = new Set();
    const alerts = [...(data.alerts || [])].sort((a, b) => (a.ts || 0) - (b.ts || 0));
    for (const alert of alerts) addAlert(alert, alert.ts, false);
    $("alert-count").textContent = String(state.alerts);
    $("alerts-empty").hidden = state.alerts > 0;
  }

  const isOpen = (r) => r.status === "open" || r.status === "claimed";

  function putReport(r) {
    if (!r || !Number.isInteger(r.id)) return;
    const old = state.known.get(r.id);
    const merged = old ? { ...old, ...r } : r;
    state.known.set(r.id, merged);
    if (isOpen(merged)) state.reports.set(r.id, merged);
    else state.reports.delete(r.id);
  }

  const caseKey = (r) => (r.case === undefined || r.case === null ? `r${r.id}` : String(r.case));

  function byPriority(a, b) {
    const pa = typeof a.priority === "number" ? a.priority : -Infinity;
    const pb = typeof b.priority === "number" ? b.priority : -Infinity;
    if (pb !== pa) return pb - pa;
    return (a.created || 0) - (b.created || 0);
  }

  // A case from its reports: the top report speaks for it; counts cover them all.
  function makeCase(id, reports) {
    reports.sort(byPriority);
    const top = reports[0];
    const reasons = [];
    for (const r of reports) for (const reason of r.reasons || []) if (!reasons.includes(reason)) reasons.push(reason);
    const reporters = new Set(reports.map((r) => (r.reporter ? r.reporter.id : null)).filter((x) => x !== null));
    const created = Math.min(...reports.map((r) => r.created || Date.now()));
    const latest = reports.reduce((a, r) => ((r.created || 0) > (a.created || 0) ? r : a), top);
    const claimed = reports.find((r) => r.status === "claimed");
    const open = reports.filter(isOpen);
    const resolved = reports.length > 0 && open.length === 0;
    return {
      id,
      reports,
      top,
      priority: top.priority,
      category: top.category,
      reasons: reasons.length ? reasons : top.reasons || [],
      target: top.target || null,
      reporters: reporters.size,
      created,
      note: [...reports].sort((a, b) => (b.created || 0) - (a.created || 0)).map((r) => r.note).find((n) => n) || "",
      latest,
      status: resolved ? "resolved" : claimed ? "claimed" : "open",
      claimedBy: claimed ? claimed.moderator || null : null,
      resolution: resolved ? top.resolution : null,
    };
  }

  function groupCases(reports) {
    const groups = new Map();
    for (const r of reports) {
      const key = caseKey(r);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(r);
    }
    return [...groups].map(([id, rs]) => makeCase(id, rs));
  }

  function rebuildCases() {
    state.cases = groupCases([...state.reports.values()]);
    state.cases.sort((a, b) => byPriority(a, b));
    const ids = new Set(state.cases.map((c) => c.id));
    if (state.cursor !== null && !ids.has(state.cursor)) state.cursor = null;
    for (const id of [...state.fresh.keys()]) if (!ids.has(id)) state.fresh.delete(id);
    renderQueue();
  }

  // A case with every report this session has seen, resolved ones too.
  function caseById(id) {
    const open = state.cases.find((c) => c.id === id);
    const all = [...state.known.values()].filter((r) => caseKey(r) === id);
    if (!all.length) return open || null;
    return makeCase(id, all);
  }

  // -- live events --------------------------------------------------------------------------

  function onEvent(event, live) {
    const kind = event.kind;
    if (kind === "report.created" || kind === "report.updated") {
      const r = event.report;
      if (!r) return;
      const key = caseKey(r);
      const wasOpen = state.cases.some((c) => c.id === key);
      putReport(r);
      if (kind === "report.created" && isOpen(r)) {
        state.fresh.set(key, Date.now());
        if (live) {
          state.flash.add(key);
          beep();
        }
        if (!wasOpen) toast(`New case: ${categoryLabel(r.category)} · ${who(r.target)}`);
      }
      if (!state.loading) {
        rebuildCases();
        if (state.view === "case" && state.caseId === key) renderCase();
      }
    } else if (kind === "alert") {
      addAlert(event.alert || {}, event.ts, live);
    } else if (kind === "user.kicked" || kind === "user.banned") {
      addActivity(event);
      if (event.user) state.staleAccounts.add(event.user.id);
    }
  }

  // -- the queue: view ----------------------------------------------------------------------

  function renderQueue() {
    const body = $("queue-body");
    const seen = new Set();
    let before = body.firstChild;
    for (const c of state.cases) {
      seen.add(c.id);
      let row = state.rows.get(c.id);
      if (!row) {
        row = h("tr", { testid: "queue-row", data: { case: c.id }, tabindex: "-1" });
        row.addEventListener("click", () => {
          select(c.id);
          openCase(row.dataset.case);
        });
        row.addEventListener("animationend", () => row.classList.remove("flash"));
        state.rows.set(c.id, row);
      }
      fillRow(row, c);
      if (row !== before) body.insertBefore(row, before);
      before = row.nextSibling;
    }
    for (const [id, row] of state.rows) {
      if (!seen.has(id)) {
        row.remove();
        state.rows.delete(id);
      }
    }
    $("queue-empty").hidden = state.cases.length > 0;
    $("queue-count").textContent = String(state.cases.length);
    document.title = state.cases.length ? `(${state.cases.length}) chatd moderation` : "chatd moderation";
  }

  function fillRow(row, c) {
    row.dataset.priority = String(c.priority);
    row.dataset.category = c.category || "";
    const flashing = row.classList.contains("flash"); // let a running cue finish
    row.className = [
      flashing ? "flash" : "",
      severity(c.category),
      state.cursor === c.id ? "is-selected" : "",
      state.fresh.has(c.id) ? "is-new" : "",
      c.status === "claimed" ? "is-claimed" : "",
    ].join(" ");
    if (state.flash.delete(c.id)) {
      row.classList.add("flash");
    }
    const t = c.target;
    const target = t
      ? [h("span", { class: "user", testid: "queue-target" }, who(t)), " ", ageBadge(t.age),
        t.status && t.status !== "active" ? [" ", h("span", { class: `status status-${t.status}` }, t.status)] : null]
      : h("span", { class: "muted" }, "no user");
    const status =
      c.status === "claimed"
        ? h("span", { class: "status status-claimed" }, c.claimedBy ? `claimed · ${who(c.claimedBy)}` : "claimed")
        : h("span", { class: "status status-open" }, "open");
    const cells = [
      h("td", { class: "c-pri" }, h("span", { class: `pri ${band(c.priority)}`, testid: "queue-priority", title: `priority ${c.priority}` }, fmtPriority(c.priority))),
      h("td", { class: "c-cat" }, h("span", { class: "cat", testid: "queue-category" }, categoryLabel(c.category)),
        c.reports.length > 1 ? h("span", { class: "muted" }, ` ×${c.reports.length}`) : null),
      h("td", { class: "c-reasons", title: shownReasons(c.reasons).join("\n") }, h("span", { testid: "queue-reasons" }, shownReasons(c.reasons).join(" · "))),
      h("td", { class: "c-target" }, target),
      h("td", { class: "c-num", testid: "queue-reporters" }, String(c.reporters)),
      h("td", { class: "c-note", title: c.note }, h("span", { testid: "queue-note" }, c.note)),
      h("td", { class: "c-age", testid: "queue-age", data: { since: String(c.created) }, title: fmtFull(c.created) }, fmtSpan(Date.now() - c.created)),
      h("td", { class: "c-status" }, state.fresh.has(c.id) ? h("span", { class: "new-tag" }, "new") : null, status),
    ];
    row.replaceChildren(...cells);
  }

  function refreshAges() {
    const now = Date.now();
    for (const cell of document.querySelectorAll("[data-since]")) {
      cell.textContent = fmtSpan(now - Number(cell.dataset.since));
    }
    for (const [id, at] of state.fresh) {
      if (now - at > FRESH_MS) {
        state.fresh.delete(id);
        const row = state.rows.get(id);
        if (row) row.classList.remove("is-new");
      }
    }
  }

  function select(id) {
    state.cursor = id;
    if (state.fresh.delete(id)) {
      const row = state.rows.get(id);
      if (row) {
        row.classList.remove("is-new");
        const tag = row.querySelector(".new-tag");
        if (tag) tag.remove();
      }
    }
    for (const [rid, row] of state.rows) row.classList.toggle("is-selected", rid === id);
    const row = state.rows.get(id);
    if (row) row.scrollIntoView({ block: "nearest" });
  }

  function moveCursor(step) {
    const ids = state.cases.map((c) => c.id);
    if (!ids.length) return;
    const at = ids.indexOf(state.cursor);
    const next = at < 0 ? (step > 0 ? 0 : ids.length - 1) : Math.min(ids.length - 1, Math.max(0, at + step));
    select(ids[next]);
  }

  // -- routing ------------------------------------------------------------------------------

  const VIEWS = ["queue", "case", "user", "audit"];

  function route() {
    if (!state.token) return;
    const [name, arg] = location.hash.replace(/^#/, "").split("/");
    const view = VIEWS.includes(name) ? name : "queue";
    state.view = view;
    for (const v of VIEWS) $(`${v}-view`).hidden = v !== view;
    $("tab-queue").classList.toggle("active", view === "queue" || view === "case");
    $("tab-audit").classList.toggle("active", view === "audit");
    if (view === "case") {
      if (state.caseId !== arg) {
        state.caseId = arg;
        state.selectedReport = null;
      }
      const c = currentCase();
      if (c && c.target) forgetIfStale(c.target.id); // opened on purpose: fresh if it changed
      renderCase();
    } else if (view === "user") {
      state.userId = Number(arg);
      state.accounts.delete(state.userId); // asked for on purpose: read it fresh
      renderUserView();
    } else if (view === "audit") {
      loadAudit();
    } else {
      renderQueue();
      if (state.cursor !== null) select(state.cursor);
    }
    if (document.activeElement === document.body) $("main").focus({ preventScroll: true });
  }

  function openCase(id) {
    if (id === null || id === undefined) return;
    location.hash = `#case/${id}`;
  }

  function toQueue() {
    if (location.hash !== "#queue") location.hash = "#queue";
    else route();
  }

  // -- the case page ------------------------------------------------------------------------

  function currentCase() {
    return state.caseId === null ? null : caseById(state.caseId);
  }

  function renderCase() {
    const c = currentCase();
    const title = $("case-title");
    if (!c) {
      title.textContent = `Case ${state.caseId}`;
      $("case-pri").textContent = "";
      $("case-status").textContent = state.loading ? "loading…" : "not in the open queue";
      clear($("case-reports"));
      clear($("snapshot")).dataset.report = "";
      clear($("account"));
      clear($("case-reasons"));
      setActionsEnabled(null);
      return;
    }
    if (state.cursor !== c.id && state.cases.some((x) => x.id === c.id)) select(c.id);
    const pri = $("case-pri");
    pri.textContent = fmtPriority(c.priority);
    pri.className = `pri pri-big ${band(c.priority)}`;
    pri.title = "priority";
    clear(title);
    append(title, [
      h("span", { class: `cat ${severity(c.category)}` }, categoryLabel(c.category)),
      " · ",
      c.target ? [who(c.target), " ", ageBadge(c.target.age)] : "no user named",
      h("span", { class: "muted case-id" }, ` case ${c.id}`),
    ]);
    const status = $("case-status");
    status.textContent =
      c.status === "claimed" ? `claimed${c.claimedBy ? ` by ${who(c.claimedBy)}` : ""}` :
      c.status === "resolved" ? `resolved${c.resolution ? `: ${c.resolution}` : ""}` : "open";
    status.className = `status status-${c.status}`;
    const reasons = clear($("case-reasons"));
    for (const reason of shownReasons(c.reasons)) reasons.append(chip(reason, "chip-reason"));
    setActionsEnabled(c);

    if (state.selectedReport === null || !c.reports.some((r) => r.id === state.selectedReport)) {
      state.selectedReport = c.top.id;
    }
    $("case-report-count").textContent = String(c.reports.length);
    const list = clear($("case-reports"));
    for (const r of c.reports) list.append(reportItem(r));
    renderSnapshot();
    if (c.target && Number.isInteger(c.target.id)) renderAccount($("account"), c.target.id, { compact: true, caseId: c.id });
    else append(clear($("account")), h("p", { class: "empty" }, "This report names no account."));
  }

  function reportItem(r) {
    const selected = r.id === state.selectedReport;
    const item = h(
      "li",
      { class: `report ${selected ? "is-selected" : ""}`, testid: "case-report", data: { report: String(r.id) } },
      h("div", { class: "report-head" },
        h("span", { class: `cat ${severity(r.category)}` }, categoryLabel(r.category)),
        h("span", { class: "muted" }, " by "),
        r.reporter ? userLink(r.reporter) : "–",
        r.reporter && typeof r.reporter.age === "number" ? [" ", ageBadge(r.reporter.age)] : null,
        r.reporter && r.reporter.org ? [" ", chip(r.reporter.org, "chip-org")] : null,
        h("span", { class: "spacer" }),
        h("span", { class: "muted", title: fmtFull(r.created) }, fmtTime(r.created)),
        h("span", { class: "muted" }, ` #${r.id}`),
        " ",
        h("span", { class: `status status-${r.status}` }, r.status === "resolved" && r.resolution ? r.resolution : r.status || ""),
      ),
      r.note
        ? h("p", { class: "note", testid: "report-note" }, r.note)
        : h("p", { class: "note muted" }, "no note"),
      !selected ? h("button", { type: "button", class: "btn btn-small", onclick: () => {
        state.selectedReport = r.id;
        renderCase();
      } }, "Show snapshot") : null,
    );
    return item;
  }

  async function loadDetail(id) {
    if (state.details.has(id)) return state.details.get(id);
    const promise = api("GET", `/api/mod/reports/${id}`).then(
      (data) => data.report,
      (err) => {
        state.details.delete(id);
        throw err;
      },
    );
    state.details.set(id, promise);
    while (state.details.size > DETAIL_CACHE) state.details.delete(state.details.keys().next().value);
    return promise;
  }

  // Draws the selected report's snapshot; again only when `force` (it is frozen anyway).
  async function renderSnapshot(force) {
    const id = state.selectedReport;
    const list = $("snapshot");
    const meta = $("snapshot-meta");
    if (!force && list.dataset.report === String(id) && list.dataset.done === "true") return;
    if (list.dataset.report !== String(id)) {
      clear(list).append(h("li", { class: "empty" }, "loading…"));
      meta.textContent = "";
    }
    list.dataset.report = String(id);
    list.dataset.done = "false";
    let report;
    try {
      report = await loadDetail(id);
    } catch (err) {
      if (state.selectedReport === id) {
        clear(list).append(h("li", { class: "empty form-error" }, `Could not load the snapshot: ${err.message}`));
      }
      return;
    }
    if (state.selectedReport !== id || state.view !== "case") return;
    const snap = (report && report.snapshot) || { conv: null, messages: [] };
    const messages = snap.messages || [];
    meta.textContent = `report #${id} · ${messages.length} message${messages.length === 1 ? "" : "s"}${snap.conv ? ` · conv ${snap.conv}` : " · several DMs"} · frozen at report time`;
    clear(list);
    if (!messages.length) list.append(h("li", { class: "empty" }, "No messages in the snapshot."));
    let lastConv = null;
    for (const m of messages) {
      if (snap.conv === null && m.conv !== lastConv) {
        list.append(h("li", { class: "conv-sep" }, `conversation ${m.conv}`));
        lastConv = m.conv;
      }
      list.append(messageItem(m, report));
    }
    list.dataset.done = "true";
    const marked = list.querySelector(".is-reported");
    if (marked && !force) marked.scrollIntoView({ block: "nearest" });
  }

  function messageItem(m, report) {
    const reported = report.msg !== null && report.msg !== undefined && m.id === report.msg;
    const targetId = report.target ? report.target.id : null;
    const fromTarget = m.from && targetId !== null && m.from.id === targetId;
    const removed = m.removed || m.text === null || m.text === undefined;
    const text = removed && m.text === null ? "message removed" : m.text;
    return h(
      "li",
      {
        class: `msg ${reported ? "is-reported" : ""} ${fromTarget ? "from-target" : ""} ${removed ? "is-removed" : ""}`,
        testid: "snapshot-message",
        data: { msg: String(m.id), reported: reported ? "true" : "false" },
      },
      h("span", { class: "msg-time", title: fmtFull(m.ts) }, fmtTime(m.ts)),
      h("span", { class: "msg-from", testid: "snapshot-sender" }, who(m.from)),
      h("span", { class: removed && m.text === null ? "msg-text muted" : "msg-text", testid: "snapshot-text" }, text),
      h("span", { class: "msg-tags" },
        reported ? h("span", { class: "tag-reported" }, "reported") : null,
        removed ? h("span", { class: "tag-removed" }, "removed") : null,
        !removed ? h("button", {
          type: "button",
          class: "btn btn-small btn-quiet",
          testid: "remove-message",
          title: "Remove this message from members' view",
          onclick: () => removeMessage(m, report),
        }, "remove") : null,
      ),
    );
  }

  function setActionsEnabled(c) {
    const live = c && c.status !== "resolved";
    const hasTarget = live && c.target && Number.isInteger(c.target.id);
    for (const button of $("case-actions").querySelectorAll("button")) {
      const action = button.dataset.action;
      const needsTarget = action === "warned" || action === "kicked" || action === "banned";
      button.disabled = !live || (needsTarget && !hasTarget) || (action === "claim" && c.status === "claimed");
    }
  }

  // -- the account panel --------------------------------------------------------------------

  // Each read is audited, so an account is fetched once, and again only when a page that
  // shows it is opened after it changed (see forgetIfStale), never behind the moderator's back.
  async function loadAccount(id) {
    if (state.accounts.has(id)) return state.accounts.get(id);
    const promise = api("GET", `/api/mod/users/${id}`).catch((err) => {
      state.accounts.delete(id);
      throw err;
    });
    state.accounts.set(id, promise);
    return promise;
  }

  function forgetIfStale(id) {
    if (state.staleAccounts.delete(id)) state.accounts.delete(id);
  }

  async function renderAccount(box, id, opts) {
    if (box.dataset.user !== String(id)) clear(box).append(h("p", { class: "empty" }, "loading account…"));
    box.dataset.user = String(id);
    let data;
    try {
      data = await loadAccount(id);
    } catch (err) {
      if (box.dataset.user === String(id)) clear(box).append(h("p", { class: "form-error" }, `Could not load the account: ${err.message}`));
      return;
    }
    if (box.dataset.user !== String(id)) return;
    clear(box);
    append(box, accountParts(data, opts || {}));
  }

  function accountParts(data, opts) {
    const u = data.user || {};
    const parts = [];
    const head = h("div", { class: "acct-head" },
      h(opts.compact ? "a" : "span", { class: "acct-name", href: opts.compact ? `#user/${u.id}` : null, testid: "account-username" }, who(u)),
      h("span", { class: "muted" }, ` #${u.id}`),
      u.role && u.role !== "member" ? chip(u.role, "chip-role") : null,
      u.org ? chip(u.org, "chip-org") : null,
      h("span", { class: "spacer" }),
      h("span", { class: `status status-${u.status || "active"}`, testid: "account-status" }, u.status || "active",
        u.status === "banned" ? (u.banned_until ? ` until ${fmtTime(u.banned_until)}` : " (permanent)") : null),
    );
    parts.push(head);

    const reg = firstBy(data.registrations, "ts");
    const created = typeof u.created === "number" ? u.created : reg ? reg.ts : null;
    const lastLogin = lastBy(data.logins, "ts");
    const split = splitReports(data.reports, u.id);
    const by = split.by;
    // On a case page, "earlier" means outside this case.
    const about = opts.caseId === undefined ? split.about : split.about.filter((r) => caseKey(r) !== opts.caseId);
    const actioned = about.filter((r) => ACTIONED.has(r.resolution)).length;
    // `bans` is the number of bans in the audit log (a list of them is also understood).
    const bans = data.bans !== undefined ? data.bans : [];
    const banCount = typeof bans === "number" ? bans : Array.isArray(bans) ? bans.length : 0;
    parts.push(h("dl", { class: "facts" },
      fact("Age", typeof u.age === "number" ? [ageBadge(u.age), u.birthdate ? ` (${u.birthdate})` : null] : "–", "account-age-years"),
      fact("Account age", created !== null ? h("span", { title: fmtFull(created) }, fmtSpan(Date.now() - created)) : "–", "account-age"),
      fact("Last login", lastLogin ? h("span", { title: fmtFull(lastLogin.ts) }, `${fmtSpan(Date.now() - lastLogin.ts)} ago`) : "–"),
      fact(opts.caseId === undefined ? "Reports about" : "Earlier reports", `${about.length}${about.length ? ` (${actioned} actioned)` : ""}`, "account-reports-count"),
      fact("Reports by", String(by.length)),
      fact("Bans", h("span", { class: banCount ? "status-banned" : "" }, String(banCount)), "account-bans-count"),
    ));

    if (Array.isArray(bans) && bans.length) {
      parts.push(h("h4", null, "Bans"));
      parts.push(h("ul", { class: "lines" }, bans.map((b) => h("li", null,
        h("span", { class: "muted" }, fmtTime(b.ts || b.created || b.at)), " ",
        b.until || b.ends ? `until ${fmtTime(b.until || b.ends)} ` : "permanent ",
        b.by ? ["by ", who(b.by), " "] : null,
        b.reason ? h("span", { class: "reason" }, b.reason) : null,
      ))));
    }

    parts.push(h("h4", null, opts.caseId === undefined ? `Reports about ${who(u)}` : `Earlier reports about ${who(u)}`));
    parts.push(about.length
      ? h("ul", { class: "lines", testid: "account-reports" }, about.slice(0, 30).map((r) => h("li", null,
        h("span", { class: "muted" }, fmtTime(r.created)), " ",
        h("span", { class: `cat ${severity(r.category)}` }, categoryLabel(r.category)), " ",
        r.reporter ? ["by ", who(r.reporter), " "] : null,
        h("span", { class: ACTIONED.has(r.resolution) ? "status status-actioned" : "status" }, r.resolution || r.status || ""),
        r.case !== undefined ? h("span", { class: "muted" }, ` case ${r.case}`) : null,
      )))
      : h("p", { class: "empty small" }, "None."));

    const devices = deviceRows(data.registrations, data.logins);
    parts.push(h("h4", null, `Devices seen (${devices.length})`));
    parts.push(devices.length
      ? h("table", { class: "grid mini devices", testid: "account-devices" },
        h("thead", null, h("tr", null, h("th", { class: "c-dev" }, "Device"), h("th", { class: "c-seen c-num" }, "Seen"),
          h("th", { class: "c-last" }, "Last"), h("th", { class: "c-addr" }, "Addresses"))),
        h("tbody", null, devices.map((d) => h("tr", null,
          h("td", { class: "mono", title: `${d.device || "no device id"}\n${d.userAgent || ""}` },
            d.registered ? chip("reg", "chip-reg") : null, d.device || "–"),
          h("td", { class: "c-num" }, String(d.count)),
          h("td", { title: fmtFull(d.last) }, fmtSpan(Date.now() - d.last)),
          h("td", { class: "mono wrap" }, [...d.addresses].slice(0, 4).join(", ") + (d.addresses.size > 4 ? ` +${d.addresses.size - 4}` : "")),
        ))))
      : h("p", { class: "empty small" }, "None recorded."));

    const linked = Array.isArray(data.linked) ? [...data.linked].sort((a, b) => (b.score || 0) - (a.score || 0)) : [];
    const bannedLinks = linked.filter((l) => l.user && l.user.status === "banned").length;
    parts.push(h("h4", null, `Linked accounts (${linked.length}${bannedLinks ? `, ${bannedLinks} banned` : ""})`));
    parts.push(linked.length
      ? h("table", { class: "grid mini linked", testid: "account-linked" },
        h("tbody", null, linked.map((l) => {
          const bar = h("span", { class: "score-fill" });
          bar.style.width = `${Math.round(Math.max(0, Math.min(1, l.score || 0)) * 100)}%`; // CSSOM, allowed by the CSP
          return h("tr", { class: l.user && l.user.status === "banned" ? "is-banned" : "" },
            h("td", null, userLink(l.user)),
            h("td", { class: "c-lstatus" }, h("span", { class: `status status-${(l.user && l.user.status) || "active"}` }, (l.user && l.user.status) || "")),
            h("td", { class: "wrap" }, (l.reasons || []).map((r) => chip(r, "chip-reason"))),
            h("td", { class: "c-score", title: `score ${l.score}` }, h("span", { class: "score" }, bar), ` ${(l.score || 0).toFixed(2)}`),
          );
        })))
      : h("p", { class: "empty small" }, "None."));
    return parts;
  }

  function fact(label, value, testid) {
    return [h("dt", null, label), h("dd", { testid }, value)];
  }

  function firstBy(list, key) {
    if (!Array.isArray(list) || !list.length) return null;
    return list.reduce((a, b) => ((b[key] || Infinity) < (a[key] || Infinity) ? b : a));
  }

  function lastBy(list, key) {
    if (!Array.isArray(list) || !list.length) return null;
    return list.reduce((a, b) => ((b[key] || 0) > (a[key] || 0) ? b : a));
  }

  // `reports` may be a list of reports (about or by the user) or {about, by}.
  function splitReports(reports, userId) {
    if (Array.isArray(reports)) {
      return {
        about: reports.filter((r) => r.target && r.target.id === userId),
        by: reports.filter((r) => r.reporter && r.reporter.id === userId),
      };
    }
    const r = reports || {};
    return {
      about: r.about || r.against || r.target || r.received || [],
      by: r.by || r.made || r.reporter || r.filed || [],
    };
  }

  function deviceRows(registrations, logins) {
    const rows = new Map();
    const add = (entry, registered) => {
      const key = entry.device || `(no id) ${entry.user_agent || ""}`;
      let row = rows.get(key);
      if (!row) {
        row = { device: entry.device, userAgent: entry.user_agent, count: 0, last: 0, addresses: new Set(), registered: false };
        rows.set(key, row);
      }
      row.count++;
      row.registered = row.registered || registered;
      if ((entry.ts || 0) > row.last) {
        row.last = entry.ts || 0;
        row.userAgent = entry.user_agent || row.userAgent;
      }
      if (entry.address) row.addresses.add(entry.address);
    };
    for (const e of registrations || []) add(e, true);
    for (const e of logins || []) add(e, false);
    return [...rows.values()].sort((a, b) => b.last - a.last);
  }

  // -- the account view ---------------------------------------------------------------------

  async function renderUserView() {
    const id = state.userId;
    $("user-title").textContent = `Account #${id}`;
    await renderAccount($("user-account"), id, {});
    let data;
    try {
      data = await loadAccount(id);
    } catch (err) {
      return; // renderAccount has said why
    }
    if (state.userId !== id || state.view !== "user") return;
    $("user-title").textContent = `${who(data.user)} · account #${id}`;
    const banned = data.user && data.user.status === "banned";
    document.querySelector('[data-user-action="unban"]').disabled = !banned;
    document.querySelector('[data-user-action="ban"]').disabled = banned;
  }

  async function userAction(kind) {
    const id = state.userId;
    let data;
    try {
      data = await loadAccount(id);
    } catch (err) {
      return toast(err.message, "error");
    }
    const name = who(data.user);
    const verbs = { warn: "Warn", kick: "Kick", ban: "Ban", unban: "Unban" };
    const texts = {
      warn: `${name} gets your reason as a notice.`,
      kick: `Every connection of ${name} closes, on every node; ${name} sees your reason and may log in again.`,
      ban: `${name} is signed out everywhere and cannot log in until the ban ends; ${name} sees your reason.`,
      unban: `${name} may log in again.`,
    };
    const answer = await confirmDialog({
      title: `${verbs[kind]} ${name}`,
      text: texts[kind],
      reason: kind === "unban" ? "" : CATEGORY_REASON.other,
      reasonRequired: true,
      days: kind === "ban",
    });
    if (!answer) return;
    const body = { reason: answer.reason };
    if (kind === "ban" && answer.days) body.days = answer.days;
    try {
      const result = await api("POST", `/api/mod/users/${id}/${kind}`, body);
      const closed = result && typeof result.sessions_closed === "number" ? ` (${result.sessions_closed} connection${result.sessions_closed === 1 ? "" : "s"} closed)` : "";
      toast(`${verbs[kind]}: ${name} done${closed}.`);
      state.accounts.delete(id);
      renderUserView();
    } catch (err) {
      toast(`${verbs[kind]} failed: ${err.message}`, "error");
    }
  }

  // -- actions on a case --------------------------------------------------------------------

  async function claimCase() {
    const c = currentCase() || (state.view === "queue" ? state.cases.find((x) => x.id === state.cursor) : null);
    if (!c || c.status === "resolved" || state.busy) return;
    state.busy = true;
    try {
      const open = c.reports.filter((x) => x.status === "open");
      const answers = await Promise.all(open.map((r) => api("POST", `/api/mod/reports/${r.id}/claim`)));
      for (const data of answers) if (data && data.report) putReport(data.report);
      toast(`Claimed case ${c.id}.`);
    } catch (err) {
      toast(`Claim failed: ${err.message}`, "error");
    } finally {
      state.busy = false;
      rebuildCases();
      if (state.view === "case") renderCase();
    }
  }

  async function resolveCase(resolution) {
    const c = currentCase();
    if (!c || c.status === "resolved" || state.busy) return;
    const onTarget = resolution === "warned" || resolution === "kicked" || resolution === "banned";
    if (onTarget && !(c.target && Number.isInteger(c.target.id))) return;
    const name = who(c.target);
    const texts = {
      warned: `${name} gets your reason as a notice. Every open report of case ${c.id} is resolved as warned.`,
      kicked: `Every connection of ${name} closes now, on every node, with your reason; ${name} may log in again. The case is resolved as kicked.`,
      banned: `${name} is signed out everywhere, every token is revoked and login is refused until the ban ends. The case is resolved as banned.`,
      police: `Case ${c.id} is resolved as handed to the police. Nothing is sent to ${name}.`,
      dismissed: `Every open report of case ${c.id} is dismissed; the reporters are told no breach was found. The note stays in the audit log.`,
    };
    const answer = await confirmDialog({
      title: `${RESOLUTION_VERB[resolution]} ${onTarget ? name : `case ${c.id}`}`,
      text: texts[resolution],
      reason: onTarget ? CATEGORY_REASON[c.category] || CATEGORY_REASON.other : "",
      reasonLabel: onTarget ? `Reason (${name} sees it)` : "Note (for the audit log)",
      reasonRequired: onTarget,
      days: resolution === "banned",
      danger: resolution === "kicked" || resolution === "banned",
    });
    if (!answer) return;
    const body = { resolution, note: answer.reason };
    if (resolution === "banned" && answer.days) body.days = answer.days;
    state.busy = true;
    try {
      const report = c.reports.find(isOpen) || c.top;
      const data = await api("POST", `/api/mod/reports/${report.id}/resolve`, body);
      for (const r of c.reports) if (isOpen(r)) putReport({ ...r, status: "resolved", resolution });
      if (data && data.report) putReport(data.report);
      rebuildCases();
      toast(`${RESOLUTION_VERB[resolution]}: case ${c.id}${onTarget ? ` · ${name}` : ""} done.`);
      toQueueNext(c.id);
      if (c.target) state.staleAccounts.add(c.target.id); // read again when next shown
    } catch (err) {
      toast(`${RESOLUTION_VERB[resolution]} failed: ${err.message}`, "error");
      renderCase();
    } finally {
      state.busy = false;
    }
  }

  // After a case is closed, back to the queue with the next case selected.
  function toQueueNext() {
    if (state.cases.length) state.cursor = state.cases[0].id;
    toQueue();
  }

  async function removeMessage(m, report) {
    const answer = await confirmDialog({
      title: `Remove message #${m.id}`,
      text: `Members see it as removed; its text stays stored for the case file.`,
      reason: CATEGORY_REASON[report.category] || CATEGORY_REASON.other,
      reasonRequired: true,
    });
    if (!answer) return;
    try {
      await api("POST", `/api/mod/messages/${m.id}/remove`, { reason: answer.reason });
      m.removed = true;
      toast(`Removed message #${m.id}.`);
      renderSnapshot(true);
    } catch (err) {
      toast(`Remove failed: ${err.message}`, "error");
    }
  }

  // -- the confirmation dialog --------------------------------------------------------------

  let confirmResolve = null;

  // Resolves to {reason, days} when confirmed, or null when cancelled.
  function confirmDialog(opts) {
    const dialog = $("confirm-dialog");
    if (dialog.open) return Promise.resolve(null);
    $("confirm-title").textContent = opts.title;
    $("confirm-text").textContent = opts.text || "";
    const label = $("confirm-reason-label");
    label.firstChild.textContent = opts.reasonLabel ? `${opts.reasonLabel} ` : "Reason ";
    const reason = $("confirm-reason");
    reason.value = opts.reason || "";
    reason.required = !!opts.reasonRequired;
    $("confirm-days-label").hidden = !opts.days;
    $("confirm-days").value = "";
    $("confirm-error").hidden = true;
    $("confirm-ok").className = opts.danger ? "btn btn-danger" : "btn btn-primary";
    dialog.dataset.reasonRequired = opts.reasonRequired ? "true" : "false";
    dialog.showModal();
    reason.focus();
    reason.select();
    return new Promise((resolve) => {
      confirmResolve = resolve;
    });
  }

  function finishConfirm(value) {
    const resolve = confirmResolve;
    confirmResolve = null;
    const dialog = $("confirm-dialog");
    if (dialog.open) dialog.close();
    if (resolve) resolve(value);
    $("main").focus({ preventScroll: true });
  }

  function submitConfirm() {
    const dialog = $("confirm-dialog");
    const reason = $("confirm-reason").value.trim();
    const error = $("confirm-error");
    if (dialog.dataset.reasonRequired === "true" && !reason) {
      error.textContent = "A reason is needed.";
      error.hidden = false;
      $("confirm-reason").focus();
      return;
    }
    if ([...reason].length > NOTE_CHARS) {
      error.textContent = `At most ${NOTE_CHARS} characters.`;
      error.hidden = false;
      return;
    }
    let days = null;
    if (!$("confirm-days-label").hidden && $("confirm-days").value !== "") {
      days = Number($("confirm-days").value);
      if (!Number.isInteger(days) || days < 1) {
        error.textContent = "Days must be a whole number of at least 1, or empty for a permanent ban.";
        error.hidden = false;
        $("confirm-days").focus();
        return;
      }
    }
    finishConfirm({ reason, days });
  }

  function setupConfirm() {
    const dialog = $("confirm-dialog");
    $("confirm-form").addEventListener("submit", (event) => {
      event.preventDefault();
      submitConfirm();
    });
    $("confirm-cancel").addEventListener("click", () => finishConfirm(null));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault(); // Escape: close through our path so the promise settles
      finishConfirm(null);
    });
    dialog.addEventListener("keydown", (event) => {
      // Enter confirms, also from the reason field; Shift+Enter is a new line there.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.target.tagName !== "BUTTON") {
        event.preventDefault();
        submitConfirm();
      }
    });
  }

  // -- the audit log ------------------------------------------------------------------------

  async function loadAudit() {
    const params = new URLSearchParams({ limit: String(AUDIT_LIMIT) });
    const actor = $("audit-actor").value.trim();
    const target = $("audit-target").value.trim();
    if (/^\d+$/.test(actor)) params.set("actor", actor);
    if (/^\d+$/.test(target)) params.set("target", target);
    const body = $("audit-body");
    $("audit-meta").textContent = "loading…";
    let data;
    try {
      data = await api("GET", `/api/mod/audit?${params}`);
    } catch (err) {
      $("audit-meta").textContent = `Could not load: ${err.message}`;
      return;
    }
    const entries = data.entries || [];
    clear(body);
    for (const e of entries) {
      body.append(h("tr", { testid: "audit-row" },
        h("td", { class: "c-time", title: fmtFull(e.ts) }, fmtTime(e.ts)),
        h("td", null, userLink(e.actor)),
        h("td", { class: "c-action" }, h("span", { class: "action" }, e.action || "")),
        h("td", null, e.target ? userLink(e.target) : h("span", { class: "muted" }, "–")),
        h("td", { class: "c-num" }, e.conv === null || e.conv === undefined ? "" : String(e.conv)),
        h("td", { class: "c-num" }, e.msg === null || e.msg === undefined ? "" : String(e.msg)),
        h("td", { class: "c-num" }, e.report === null || e.report === undefined ? "" : String(e.report)),
        h("td", { class: "c-reason" }, e.reason ? h("span", { class: "reason-text" }, e.reason) : null, detailText(e.detail, !!e.reason)),
      ));
    }
    $("audit-empty").hidden = entries.length > 0;
    $("audit-meta").textContent = `${entries.length} entr${entries.length === 1 ? "y" : "ies"} · ${fmtTime(Date.now())}`;
  }

  // An audit entry's detail (say, the resolution or the days of a ban), compact.
  function detailText(detail, after) {
    if (!detail || typeof detail !== "object") return null;
    const parts = Object.entries(detail)
      .filter(([, v]) => v !== null && v !== undefined && v !== false && typeof v !== "object")
      .map(([key, v]) => {
        const k = key.replace(/_/g, " ");
        return v === true ? k : typeof v === "number" && v > TIMESTAMP_FLOOR ? `${k} ${fmtTime(v)}` : `${k} ${v}`;
      });
    if (!parts.length) return null;
    return h("span", { class: "detail" }, `${after ? " · " : ""}${parts.join(" · ")}`);
  }

  // -- alerts and activity ------------------------------------------------------------------

  function addAlert(alert, ts, live) {
    if (alert.id !== undefined) {
      if (state.alertIds.has(alert.id)) return; // listed and also heard live
      state.alertIds.add(alert.id);
    }
    const kind = alert.kind || "alert";
    const details = [];
    if (kind === "ban_evasion") {
      if (alert.user) details.push(h("div", null, h("span", { class: "muted" }, "new account "), userLink(alert.user), " ", ageBadge(alert.user.age)));
      const linked = alert.linked || [];
      const linkLine = (u) => [userLink(u), " ", (u.reasons || []).map((r) => chip(r, "chip-reason")),
        typeof u.score === "number" ? h("span", { class: "muted" }, u.score.toFixed(2)) : null];
      if (linked.length === 1) {
        details.push(h("div", null, h("span", { class: "muted" }, "linked banned "), linkLine(linked[0])));
      } else if (linked.length) {
        details.push(h("div", { class: "muted" }, `linked to ${linked.length} banned accounts`));
        details.push(h("ul", { class: "lines" }, linked.slice(0, ALERT_LINKED_SHOWN).map((u) => h("li", null, linkLine(u)))));
        if (linked.length > ALERT_LINKED_SHOWN) details.push(h("div", { class: "muted" }, `+${linked.length - ALERT_LINKED_SHOWN} more`));
      }
    } else if (alert.user) {
      details.push(h("div", null, userLink(alert.user), " ", ageBadge(alert.user.age)));
    }
    const skip = new Set(["id", "kind", "user", "linked", "ts"]);
    const extra = Object.entries(alert).filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined);
    if (extra.length) {
      details.push(h("div", { class: "kv" }, extra.map(([k, v]) => h("span", null, h("span", { class: "muted" }, `${k} `), scalar(v)))));
    }
    const item = h("li", { class: `feed-item alert alert-${kind.replace(/[^a-z_]/g, "")}${live ? " flash" : ""}`, testid: "alert" },
      h("div", { class: "feed-head" }, h("strong", null, ALERT_LABEL[kind] || kind), h("span", { class: "spacer" }),
        h("span", { class: "muted", title: fmtFull(ts) }, fmtTime(ts || Date.now()))),
      details,
    );
    item.addEventListener("animationend", () => item.classList.remove("flash"));
    $("alerts").prepend(item);
    while ($("alerts").childElementCount > ALERTS_KEPT) $("alerts").lastChild.remove();
    state.alerts++;
    $("alert-count").textContent = String(state.alerts);
    $("alerts-empty").hidden = true;
    if (live) beep();
  }

  function scalar(v) {
    if (Array.isArray(v)) return v.map((x) => (x && typeof x === "object" ? who(x) : String(x))).join(", ");
    if (v && typeof v === "object") {
      if ("username" in v) return who(v);
      return Object.entries(v).map(([k, x]) => `${k}: ${typeof x === "object" ? JSON.stringify(x) : x}`).join(", ");
    }
    return String(v);
  }

  function addActivity(event) {
    const verb = event.kind === "user.banned" ? "banned" : "kicked";
    const item = h("li", { class: `feed-item activity activity-${verb}`, testid: "activity-item" },
      h("div", { class: "feed-head" }, event.by ? who(event.by) : "–", h("span", { class: `verb verb-${verb}` }, ` ${verb} `), userLink(event.user),
        h("span", { class: "spacer" }), h("span", { class: "muted", title: fmtFull(event.ts) }, fmtTime(event.ts || Date.now()))),
      event.reason ? h("div", { class: "reason muted" }, event.reason) : null,
    );
    $("activity").prepend(item);
    $("activity-empty").hidden = true;
    while ($("activity").childElementCount > 100) $("activity").lastChild.remove();
  }

  // -- sound --------------------------------------------------------------------------------

  let tone = null;

  // A 120 ms 660 Hz tone as a WAV data: URI (the CSP allows media-src data:).
  function makeTone() {
    const rate = 8000;
    const samples = Math.floor(rate * 0.12);
    const bytes = new Uint8Array(44 + samples);
    const view = new DataView(bytes.buffer);
    const str = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
    str(0, "RIFF");
    view.setUint32(4, 36 + samples, true);
    str(8, "WAVEfmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, rate, true);
    view.setUint32(28, rate, true);
    view.setUint16(32, 1, true);
    view.setUint16(34, 8, true);
    str(36, "data");
    view.setUint32(40, samples, true);
    for (let i = 0; i < samples; i++) {
      const fade = Math.min(1, i / 80, (samples - i) / 240);
      bytes[44 + i] = 128 + Math.round(40 * fade * Math.sin((2 * Math.PI * 660 * i) / rate));
    }
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return `data:audio/wav;base64,${btoa(binary)}`;
  }

  let lastBeep = 0;
  function beep() {
    if (!state.sound || Date.now() - lastBeep < SOUND_GAP_MS) return;
    lastBeep = Date.now();
    try {
      if (!tone) tone = new Audio(makeTone());
      tone.currentTime = 0;
      const played = tone.play();
      if (played && played.catch) played.catch(() => {});
    } catch (err) {
      // No audio device: the visual cue is enough.
    }
  }

  // -- keyboard -----------------------------------------------------------------------------

  function typing(target) {
    if (!(target instanceof Element)) return false;
    return target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']") !== null;
  }

  function onKey(event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (!state.token || typing(event.target)) return;
    if (document.querySelector("dialog[open]")) return; // a dialog handles its own keys
    const onControl = event.target instanceof Element && event.target.closest("a, button") !== null;
    const key = event.key;
    let handled = true;
    if (key === "?") {
      $("keys-dialog").showModal();
    } else if (key === "Escape") {
      if (state.view !== "queue") toQueue();
      else handled = false;
    } else if (key === "a") {
      location.hash = "#audit";
    } else if (state.view === "queue" || state.view === "case") {
      if (key === "j" || key === "k") {
        moveCursor(key === "j" ? 1 : -1);
        if (state.view === "case") openCase(state.cursor); // next case, as in a mail reader
      } else if (key === "Enter" && state.view === "queue" && !onControl) {
        if (state.cursor !== null) openCase(state.cursor);
      } else if (key === "c") {
        claimCase();
      } else if (state.view === "case" && CASE_KEYS[key]) {
        resolveCase(CASE_KEYS[key]);
      } else {
        handled = false;
      }
    } else {
      handled = false;
    }
    if (handled) event.preventDefault();
  }

  // -- start --------------------------------------------------------------------------------

  function init() {
    $("login-form").addEventListener("submit", onLogin);
    $("logout-button").addEventListener("click", logout);
    $("keys-button").addEventListener("click", () => $("keys-dialog").showModal());
    $("keys-dialog").addEventListener("close", () => $("main").focus({ preventScroll: true }));
    $("audit-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      loadAudit();
    });
    for (const button of $("case-actions").querySelectorAll("button")) {
      button.addEventListener("click", () => {
        const action = button.dataset.action;
        if (action === "claim") claimCase();
        else resolveCase(action);
      });
    }
    for (const button of document.querySelectorAll("[data-user-action]")) {
      button.addEventListener("click", () => userAction(button.dataset.userAction));
    }
    const sound = $("sound-toggle");
    state.sound = localStorage.getItem(SOUND_KEY) === "on";
    sound.checked = state.sound;
    sound.addEventListener("change", () => {
      state.sound = sound.checked;
      localStorage.setItem(SOUND_KEY, state.sound ? "on" : "off");
      if (state.sound) beep(); // let the moderator hear what it sounds like
      sound.blur();
    });
    setupConfirm();
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", route);
    setInterval(refreshAges, AGE_REFRESH_MS);

    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) startSession(token, null);
    else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
