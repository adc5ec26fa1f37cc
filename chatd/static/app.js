// chatd member page: log in or register, then chat over one WebSocket (PROTOCOL.md, v1).
//
// Safety rule of this file: text that comes from people or from the server (usernames,
// titles, message text, notices, reasons, error messages) reaches the DOM only as text
// nodes (textContent, Node.append(string)) or attribute values, never as HTML.

// -- settings ------------------------------------------------------------------------------

const SUBPROTOCOL = "chatd.v1.json";
const TOKEN_KEY = "chatd.token"; // sessionStorage: the session token, gone with the tab
const OPEN_KEY = "chatd.open"; // sessionStorage: the conversation open in this tab
const READ_KEY = "chatd.read."; // localStorage, + user id: {conv: last seq seen}

const RECONNECT_BASE_MS = 500; // ms before the first reconnect attempt
const RECONNECT_MAX_MS = 15000; // ms: the longest wait between two attempts
const PING_EVERY_MS = 20000; // ms between two pings on a quiet connection
const PONG_TIMEOUT_MS = 10000; // ms without a pong after which the socket counts as dead
const RETRY_DEFAULT_MS = 1000; // ms before resending when an error names no retry_after
const INITIAL_HISTORY = 50; // messages loaded for a conversation the page has not seen yet
const EARLIER_PAGE = 50; // messages loaded by "Show earlier messages"
const SYNC_PAGE = 200; // messages per sync page (the protocol allows 1 to 500)
const MAX_TEXT = 4000; // code points of a message after trimming (PROTOCOL.md section 1)
const NEAR_BOTTOM_PX = 120; // px from the bottom within which new messages keep the view pinned
const MAX_NOTE = 2000; // code points of a report's note (PROTOCOL.md section 3)
const REPORT_TIMEOUT_MS = 10000; // ms a report or block waits for its answer before it counts as failed
const TOAST_MS = 6000; // ms a thank-you stays on screen
const TOAST_LONG_MS = 12000; // ms a toast with a button in it, or an error, stays on screen
const TOASTS_SHOWN = 3; // toasts on screen at once; the oldest goes first
const MENU_GAP_PX = 6; // px between the report menu and the control that opened it
const MENU_MARGIN_PX = 8; // px the report menu keeps from the edges of the window
const NARROW = "(max-width: 720px)"; // as in app.css: the menu is a sheet at the bottom there

// Close codes after which the page must not reconnect by itself (PROTOCOL.md section 5).
const CLOSE_AUTH_FAILED = 4001;
const CLOSE_KICKED = 4003;
const CLOSE_BANNED = 4004;
const CLOSE_NORMAL = 1000;

// Send errors after which the same cmid is sent again, after retry_after.
const RETRYABLE = new Set(["rate_limited", "unavailable"]);

// -- DOM helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element; string children become text nodes, so they are never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

function show(node, visible) {
  node.hidden = !visible;
}

function setText(node, text) {
  node.textContent = text ?? "";
  show(node, Boolean(text));
}

/** Another member, whom the page may offer to report or block (not the member, not nobody). */
function isOther(user) {
  return Boolean(user && user.id !== null && user.id !== undefined && state.user) &&
    user.id !== state.user.id;
}

/**
 * A user's name. Another member's name is a button that opens the report menu for them (the
 * "user menu"): a category chosen there sends the report.
 */
function userName(user, extraClass = "") {
  const label = isOther(user)
    ? h(
        "button",
        {
          type: "button",
          class: "name-button",
          "data-testid": "user-menu",
          "aria-haspopup": "dialog",
          title: `Report or block ${user.username}`,
          onclick: (event) => openReportMenu(event.currentTarget, userTarget(user)),
        },
        user.username,
      )
    : user.username;
  return h(
    "span",
    {
      class: `user-name ${extraClass}`.trim(),
      "data-testid": "user-name",
      "data-user-id": user.id,
      "data-username": user.username,
    },
    label,
  );
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const yearFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

function shortTime(ts) {
  const when = new Date(ts);
  const now = new Date();
  const time = timeFormat.format(when);
  if (when.toDateString() === now.toDateString()) return time;
  if (when.getFullYear() === now.getFullYear()) return `${dateFormat.format(when)}, ${time}`;
  return `${yearFormat.format(when)}, ${time}`;
}

function newCmid() {
  if (crypto.randomUUID) return crypto.randomUUID(); // only in secure contexts
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function seconds(ms) {
  return Math.max(1, Math.ceil(ms / 1000));
}

// -- state ---------------------------------------------------------------------------------

/**
 * A conversation as the page holds it. `held` is the highest seq up to which the page holds
 * every message from `base + 1` on: live gaps and reconnects sync after it.
 */
function newConv(obj) {
  return {
    id: obj.conv,
    kind: obj.kind,
    title: obj.title,
    members: obj.members || [],
    lastSeq: obj.last_seq || 0, // the server's last seq, as last announced
    base: null, // the seq before the oldest message loaded (null: nothing loaded yet)
    held: null,
    messages: new Map(), // seq -> message
    lastTs: 0, // time of the newest message held, for the sidebar order
    unread: 0,
    syncing: false,
    resync: false,
  };
}

const state = {
  token: null,
  user: null,
  convs: new Map(), // conv id -> conversation
  openId: null,
  readMarks: {}, // conv id -> last seq the member has seen
  outbox: new Map(), // cmid -> {cmid, conv, text, status, error}, in the order typed
  holdTimer: null, // while set, sends wait: the server said rate_limited or unavailable
  ws: null,
  ready: false, // `ready` received on the current socket
  connects: 0, // `ready` frames received since the page loaded
  nextRid: 1,
  requests: new Map(), // rid -> {resolve, reject}
  attempt: 0, // reconnect attempts since the last `ready`
  reconnectTimer: null,
  pingTimer: null,
  pongTimer: null,
  kickReason: null, // from the `kicked` frame that precedes close 4003/4004
  loggingOut: false,
  blocked: new Set(), // ids of users this page blocked (the server keeps the blocks themselves)
};

// -- screens -------------------------------------------------------------------------------

const ui = {
  auth: $("auth"),
  chat: $("chat"),
  authMessage: $("auth-message"),
  loginForm: $("login-form"),
  registerForm: $("register-form"),
  tabLogin: $("tab-login"),
  tabRegister: $("tab-register"),
  status: $("status"),
  meName: $("me-name"),
  logout: $("logout"),
  disconnect: $("disconnect"),
  disconnectText: $("disconnect-text"),
  reconnect: $("reconnect"),
  notices: $("notices"),
  layout: $("layout"),
  dmForm: $("dm-form"),
  dmInput: $("dm-input"),
  roomForm: $("room-form"),
  roomInput: $("room-input"),
  sidebarError: $("sidebar-error"),
  dmList: $("dm-list"),
  roomList: $("room-list"),
  dmEmpty: $("dm-empty"),
  roomEmpty: $("room-empty"),
  placeholder: $("placeholder"),
  convView: $("conv-view"),
  back: $("back"),
  convTitle: $("conv-title"),
  convSub: $("conv-sub"),
  leave: $("leave"),
  dmReport: $("dm-report"),
  scroller: $("scroller"),
  earlier: $("earlier"),
  messages: $("messages"),
  composer: $("composer"),
  sendInput: $("send-input"),
  toasts: $("toasts"),
};

function showAuth(message = "") {
  show(ui.chat, false);
  show(ui.auth, true);
  setText(ui.authMessage, message);
  selectTab("login");
  document.title = "chatd";
}

function showChat() {
  show(ui.auth, false);
  show(ui.chat, true);
}

function selectTab(which) {
  const login = which === "login";
  ui.tabLogin.setAttribute("aria-selected", String(login));
  ui.tabRegister.setAttribute("aria-selected", String(!login));
  show(ui.loginForm, login);
  show(ui.registerForm, !login);
  (login ? ui.loginForm : ui.registerForm).querySelector("input").focus();
}

// -- accounts (HTTP) -----------------------------------------------------------------------

/** POST a JSON body; answers {ok, status, body, retryAfter} and never throws for HTTP errors. */
async function postJson(path, body, token = null) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method: "POST",
    headers,
    body: body === null ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null; // 204, or a proxy's HTML error page
  }
  return {
    ok: response.ok,
    status: response.status,
    body: data,
    retryAfter: Number(response.headers.get("Retry-After")) || 0,
  };
}

function httpErrorText(result, fallback) {
  const error = result.body && result.body.error;
  const code = error && error.code;
  if (code === "bad_credentials") return "Wrong username or password.";
  if (code === "rate_limited") {
    return `Too many attempts. Try again in ${result.retryAfter || 60} s.`;
  }
  if (code === "banned") return "This account is banned.";
  if (code === "unavailable") return "The server is busy. Try again in a moment.";
  if (error && error.message) return error.message;
  return fallback;
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function clearFormErrors(form) {
  for (const node of form.querySelectorAll(".field-error, .form-error")) setText(node, "");
  for (const input of form.querySelectorAll("input")) input.removeAttribute("aria-invalid");
}

function showFieldErrors(form, fields) {
  let shown = false;
  for (const [name, message] of Object.entries(fields || {})) {
    const slot = form.querySelector(`.field-error[data-field="${CSS.escape(name)}"]`);
    const input = form.querySelector(`input[name="${CSS.escape(name)}"]`);
    if (!slot) continue;
    setText(slot, String(message));
    if (input) input.setAttribute("aria-invalid", "true");
    shown = true;
  }
  return shown;
}

async function submitAuth(form, path, values, fallback) {
  const button = form.querySelector("button[type=submit]");
  const errorLine = form.querySelector(".form-error");
  clearFormErrors(form);
  button.disabled = true;
  try {
    const result = await postJson(path, values);
    if (result.ok && result.body && result.body.token) {
      form.reset();
      startSession(result.body.token, result.body.user);
      return;
    }
    const error = (result.body && result.body.error) || {};
    const fields = { ...(error.fields || {}) };
    if (error.code === "username_taken") fields.username = "That username is taken.";
    if (error.code === "under_age") fields.birthdate = error.message || "You are too young.";
    if (!showFieldErrors(form, fields)) setText(errorLine, httpErrorText(result, fallback));
  } catch {
    setText(errorLine, "Could not reach the server. Check your connection.");
  } finally {
    button.disabled = false;
  }
}

ui.tabLogin.addEventListener("click", () => selectTab("login"));
ui.tabRegister.addEventListener("click", () => selectTab("register"));

ui.loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const { username, password } = formValues(ui.loginForm);
  submitAuth(ui.loginForm, "/api/login", { username, password }, "Could not log in.");
});

ui.registerForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const { username, password, email, birthdate } = formValues(ui.registerForm);
  submitAuth(
    ui.registerForm,
    "/api/register",
    { username, password, email, birthdate },
    "Could not register.",
  );
});

function startSession(token, user) {
  state.token = token;
  state.user = user || null;
  state.loggingOut = false;
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Private modes may refuse storage; the session then lasts as long as the page.
  }
  if (state.user) ui.meName.textContent = state.user.username;
  showChat();
  connect();
}

/** Forget everything of the session; the page goes back to the login screen. */
function endSession(message) {
  abandonSocket();
  clearTimeout(state.reconnectTimer);
  clearTimeout(state.holdTimer);
  try {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(OPEN_KEY);
  } catch {
    // nothing stored
  }
  Object.assign(state, {
    token: null,
    user: null,
    convs: new Map(),
    openId: null,
    readMarks: {},
    outbox: new Map(),
    holdTimer: null,
    attempt: 0,
    kickReason: null,
  });
  ui.notices.replaceChildren();
  ui.toasts.replaceChildren();
  state.blocked.clear();
  show(ui.disconnect, false);
  closeConversationView();
  renderSidebar();
  ui.meName.textContent = "";
  state.connects = 0;
  setStatus("signed-out", "Signed out");
  showAuth(message);
}

ui.logout.addEventListener("click", async () => {
  state.loggingOut = true;
  const token = state.token;
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.close(CLOSE_NORMAL);
  try {
    await postJson("/api/logout", null, token);
  } catch {
    // Offline: the token dies with the tab's sessionStorage all the same.
  }
  endSession("You have logged out.");
});

// -- connection ----------------------------------------------------------------------------

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.dataset.connects = String(state.connects);
  ui.status.textContent = text;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  abandonSocket();
  if (!state.token) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let ws;
  try {
    ws = new WebSocket(`${scheme}//${location.host}/ws`, SUBPROTOCOL);
  } catch {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  state.ready = false;
  setStatus("connecting", state.connects ? "Reconnecting…" : "Connecting…");
  ws.addEventListener("open", () => {
    if (state.ws === ws) ws.send(JSON.stringify({ t: "auth", token: state.token }));
  });
  ws.addEventListener("message", (event) => {
    if (state.ws !== ws || typeof event.data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame && typeof frame === "object" && typeof frame.t === "string") handleFrame(frame);
  });
  ws.addEventListener("close", (event) => {
    if (state.ws === ws) onSocketClosed(event.code);
  });
}

/** Stop listening to the current socket and close it; its events are ignored from now on. */
function abandonSocket() {
  const ws = state.ws;
  state.ws = null;
  state.ready = false;
  stopHeartbeat();
  for (const pending of state.requests.values()) pending.reject(new Error("disconnected"));
  state.requests.clear();
  if (ws && ws.readyState <= WebSocket.OPEN) {
    try {
      ws.close();
    } catch {
      // already closing
    }
  }
}

function onSocketClosed(code) {
  abandonSocket();
  if (state.loggingOut || !state.token) return;
  const reason = state.kickReason;
  state.kickReason = null;
  if (code === CLOSE_AUTH_FAILED) {
    endSession("Your session has ended. Please log in again.");
  } else if (code === CLOSE_BANNED) {
    endSession(
      reason ? `Your account has been banned: ${reason}` : "Your account has been banned.",
    );
  } else if (code === CLOSE_KICKED) {
    setStatus("disconnected", "Disconnected");
    const text = reason
      ? `A moderator disconnected you: ${reason}`
      : "A moderator disconnected you.";
    showDisconnect(text, true);
  } else {
    scheduleReconnect();
  }
}

function showDisconnect(text, canReconnect) {
  ui.disconnectText.textContent = text;
  show(ui.reconnect, canReconnect);
  show(ui.disconnect, true);
}

ui.reconnect.addEventListener("click", () => {
  show(ui.disconnect, false);
  state.attempt = 0;
  connect();
});

function scheduleReconnect() {
  clearTimeout(state.reconnectTimer);
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** state.attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter spreads a reconnect storm
  state.attempt += 1;
  const offline = navigator.onLine === false;
  setStatus(
    offline ? "offline" : "reconnecting",
    offline ? "Offline — waiting for the network" : `Reconnecting in ${seconds(delay)} s…`,
  );
  state.reconnectTimer = setTimeout(connect, delay);
}

window.addEventListener("offline", () => {
  // The socket is gone with the network even when the browser has not noticed yet.
  if (!state.token || state.loggingOut || !ui.disconnect.hidden) return;
  abandonSocket();
  scheduleReconnect();
});

window.addEventListener("online", () => {
  if (!state.token || state.loggingOut || !ui.disconnect.hidden) return;
  if (state.ws && state.ws.readyState === WebSocket.OPEN) return;
  state.attempt = 0; // an attempt made while offline is bound to fail: start a fresh one
  connect();
});

function startHeartbeat() {
  stopHeartbeat();
  state.pingTimer = setInterval(() => {
    if (!state.ready) return;
    sendFrame({ t: "ping" });
    clearTimeout(state.pongTimer);
    state.pongTimer = setTimeout(() => {
      abandonSocket(); // no pong: the connection is dead without a close frame
      scheduleReconnect();
    }, PONG_TIMEOUT_MS);
  }, PING_EVERY_MS);
}

function stopHeartbeat() {
  clearInterval(state.pingTimer);
  clearTimeout(state.pongTimer);
  state.pingTimer = state.pongTimer = null;
}

function sendFrame(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

/** Send a frame with a fresh rid; resolves with the reply that echoes it (an error too). */
function request(frame) {
  return new Promise((resolve, reject) => {
    if (!state.ready) {
      reject(new Error("not connected"));
      return;
    }
    const rid = state.nextRid++;
    state.requests.set(rid, { resolve, reject });
    if (!sendFrame({ ...frame, rid })) {
      state.requests.delete(rid);
      reject(new Error("not connected"));
    }
  });
}

// -- incoming frames -----------------------------------------------------------------------

const handlers = {
  ready: onReady,
  conv: onConv,
  left: (frame) => removeConv(frame.conv),
  msg: onMsg,
  ack: onAck,
  removed: onRemoved,
  notice: (frame) => showNotice(frame.text, frame.kind),
  kicked: (frame) => {
    state.kickReason = typeof frame.reason === "string" ? frame.reason : null;
  },
  error: onError,
  pong: () => clearTimeout(state.pongTimer),
};

function handleFrame(frame) {
  const handler = handlers[frame.t];
  if (handler) handler(frame); // frame types the page does not know are ignored
  // `msg` frames of a sync carry its rid too; only the final `synced` answers the request.
  if (frame.rid !== undefined && frame.t !== "msg") {
    const pending = state.requests.get(frame.rid);
    if (pending) {
      state.requests.delete(frame.rid);
      pending.resolve(frame);
    }
  }
}

function onReady(frame) {
  state.ready = true;
  state.connects += 1;
  state.attempt = 0;
  state.user = frame.user;
  ui.meName.textContent = frame.user.username;
  show(ui.disconnect, false);
  setStatus("online", "Online");
  loadReadMarks();
  const present = new Set();
  for (const obj of frame.conversations || []) {
    upsertConv(obj);
    present.add(obj.conv);
  }
  for (const id of [...state.convs.keys()]) {
    if (!present.has(id)) removeConv(id); // left, or removed, while the page was away
  }
  renderSidebar();
  if (state.openId === null) {
    const saved = savedOpenConversation();
    if (state.convs.has(saved)) openConversation(saved);
  } else if (state.convs.has(state.openId)) {
    renderConversationHeader();
  }
  for (const conv of state.convs.values()) syncConv(conv); // resume after what the page holds
  clearTimeout(state.holdTimer);
  state.holdTimer = null;
  for (const entry of state.outbox.values()) {
    if (entry.status !== "failed") transmit(entry); // same cmid: no duplicates if it got in
  }
  startHeartbeat();
}

function savedOpenConversation() {
  try {
    return Number(sessionStorage.getItem(OPEN_KEY));
  } catch {
    return null;
  }
}

function onConv(frame) {
  const conv = upsertConv(frame);
  renderSidebar();
  if (state.openId === conv.id) renderConversationHeader();
  if (conv.held === null || conv.lastSeq > conv.held) syncConv(conv);
}

function upsertConv(obj) {
  let conv = state.convs.get(obj.conv);
  if (!conv) {
    conv = newConv(obj);
    state.convs.set(conv.id, conv);
  } else {
    conv.kind = obj.kind;
    conv.title = obj.title;
    conv.members = obj.members || conv.members;
    conv.lastSeq = Math.max(conv.lastSeq, obj.last_seq || 0);
  }
  return conv;
}

function removeConv(id) {
  if (!state.convs.delete(id)) return;
  for (const [cmid, entry] of state.outbox) {
    if (entry.conv === id) state.outbox.delete(cmid);
  }
  delete state.readMarks[id];
  saveReadMarks();
  if (state.openId === id) closeConversationView();
  renderSidebar();
}

/** Fetch what the page misses of a conversation, page by page, until it holds the last seq. */
async function syncConv(conv) {
  if (conv.syncing) {
    conv.resync = true; // the running loop goes round once more
    return;
  }
  conv.syncing = true;
  try {
    if (conv.held === null) {
      conv.base = Math.max(0, conv.lastSeq - INITIAL_HISTORY);
      conv.held = conv.base;
      if (state.openId === conv.id) renderEarlierButton();
    }
    for (;;) {
      conv.resync = false;
      const before = conv.held;
      const reply = await request({ t: "sync", conv: conv.id, after: conv.held, limit: SYNC_PAGE });
      if (reply.t !== "synced" || state.convs.get(conv.id) !== conv) break;
      conv.lastSeq = Math.max(conv.lastSeq, reply.last_seq);
      // A page that brought nothing new ends the loop, whatever the server said.
      if (conv.held === before && !conv.resync) break;
      if (!(reply.more || conv.resync || conv.held < conv.lastSeq)) break;
    }
  } catch {
    // The socket dropped; the next `ready` syncs this conversation again.
  } finally {
    conv.syncing = false;
  }
}

async function loadEarlier(conv) {
  if (!conv.base || conv.loadingEarlier) return;
  conv.loadingEarlier = true;
  ui.earlier.disabled = true;
  const fromBottom = ui.scroller.scrollHeight - ui.scroller.scrollTop;
  const after = Math.max(0, conv.base - EARLIER_PAGE);
  try {
    const reply = await request({ t: "sync", conv: conv.id, after, limit: conv.base - after });
    if (reply.t === "synced") conv.base = after;
  } catch {
    // offline: the button stays for another try
  } finally {
    conv.loadingEarlier = false;
    ui.earlier.disabled = false;
  }
  if (state.openId === conv.id) {
    renderEarlierButton();
    ui.scroller.scrollTop = ui.scroller.scrollHeight - fromBottom; // keep the reader's place
  }
}

function onMsg(frame) {
  const conv = state.convs.get(frame.conv);
  if (!conv || typeof frame.seq !== "number" || !frame.from) return;
  storeMessage(conv, {
    conv: frame.conv,
    id: frame.id,
    seq: frame.seq,
    from: frame.from,
    text: frame.removed ? null : frame.text,
    ts: frame.ts,
    cmid: frame.cmid,
    removed: Boolean(frame.removed),
    provisional: false,
  });
  if (conv.held !== null && frame.seq > conv.held + 1) syncConv(conv); // a gap seen live
}

/** Keep one message per (conv, seq); a message stands in for its pending copy once sent. */
function storeMessage(conv, message) {
  const existing = conv.messages.get(message.seq);
  if (existing && !existing.provisional) {
    if (message.removed && !existing.removed) markRemoved(conv, existing);
    return;
  }
  conv.messages.set(message.seq, message);
  if (conv.held !== null) {
    while (conv.messages.has(conv.held + 1) && !conv.messages.get(conv.held + 1).provisional) {
      conv.held += 1;
    }
  }
  conv.lastSeq = Math.max(conv.lastSeq, message.seq);
  conv.lastTs = Math.max(conv.lastTs, message.ts || 0);
  const mine = state.user && message.from.id === state.user.id;
  if (mine && message.cmid && state.outbox.has(message.cmid)) {
    sendSettled(message.cmid); // the msg can come before the ack: it is committed
  }
  const open = state.openId === conv.id;
  if (open) {
    if (mine && message.cmid) removePendingElement(message.cmid);
    placeMessageElement(message);
  }
  if (!existing) {
    const seen = state.readMarks[conv.id] || 0;
    if (open && document.visibilityState === "visible") markRead(conv);
    else if (!mine && message.seq > seen) conv.unread += 1;
  }
  renderSidebarSoon();
}

function onAck(frame) {
  const entry = state.outbox.get(frame.cmid);
  if (!entry) return;
  sendSettled(frame.cmid);
  const conv = state.convs.get(frame.conv);
  if (!conv) return;
  if (conv.messages.has(frame.seq)) {
    if (state.openId === conv.id) removePendingElement(frame.cmid);
    return;
  }
  // Committed; show it as sent until its `msg` (which may carry the stored text) arrives.
  storeMessage(conv, {
    conv: frame.conv,
    id: frame.id,
    seq: frame.seq,
    from: { id: state.user.id, username: state.user.username },
    text: entry.text,
    ts: frame.ts,
    cmid: frame.cmid,
    removed: false,
    provisional: true,
  });
}

function onRemoved(frame) {
  const conv = state.convs.get(frame.conv);
  const message = conv && conv.messages.get(frame.seq);
  if (message && (frame.id === undefined || message.id === frame.id)) markRemoved(conv, message);
}

function markRemoved(conv, message) {
  message.removed = true;
  message.text = null;
  if (state.openId === conv.id) placeMessageElement(message);
}

function onError(frame) {
  if (typeof frame.cmid === "string" && state.outbox.has(frame.cmid)) {
    const entry = state.outbox.get(frame.cmid);
    if (RETRYABLE.has(frame.code)) {
      const wait = Number(frame.retry_after) > 0 ? Number(frame.retry_after) : RETRY_DEFAULT_MS;
      entry.status = "waiting";
      holdSends(wait);
    } else {
      entry.status = "failed";
      entry.error = sendErrorText(frame);
    }
    if (state.openId === entry.conv) placePendingElement(entry);
  }
  // Errors that answer a request reach its caller through the rid.
}

function sendErrorText(frame) {
  if (frame.code === "blocked") return "You cannot message this member.";
  if (frame.code === "not_member") return "You are not in this conversation.";
  return typeof frame.message === "string" ? frame.message : frame.code;
}

// -- reporting -----------------------------------------------------------------------------

/*
 * Reporting takes two clicks: "Report" (on a message, or another member's name), then the
 * category, which sends the report at once. A note and "also block" can be set before that.
 * Members rarely report, so nothing else stands in the way: no confirmation, no form to fill.
 */

// The categories of PROTOCOL.md section 3, in the order offered, with plain-language labels.
const REPORT_CATEGORIES = [
  ["minor_sexual", "Sexual contact with a minor / grooming"],
  ["sexual", "Unwanted sexual contact"],
  ["harassment", "Harassment or bullying"],
  ["threat", "Threats"],
  ["fake_account", "Fake age or identity"],
  ["ban_evasion", "Banned user back again"],
  ["spam", "Spam"],
  ["other", "Something else"],
];

const THANKS = "Thank you — a moderator will look at it.";

const menu = {
  root: $("report-menu"),
  title: $("report-title"),
  close: $("report-close"),
  note: $("report-note"),
  blockRow: $("report-block-row"),
  block: $("report-block"),
  blockLabel: $("report-block-label"),
  categories: $("report-categories"),
  error: $("report-error"),
  target: null, // what the open menu reports: messageTarget() or userTarget()
  anchor: null, // the control that opened it; focus goes back there on close
  sending: false,
};

function messageTarget(message) {
  return { kind: "msg", msg: message.id, user: { ...message.from } };
}

function userTarget(user) {
  return { kind: "user", user: { id: user.id, username: user.username } };
}

for (const [category, label] of REPORT_CATEGORIES) {
  menu.categories.append(
    h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: "report-category",
          "data-testid": "report-category",
          "data-category": category,
          onclick: () => chooseCategory(category),
        },
        label,
      ),
    ),
  );
}

function categoryButtons() {
  return [...menu.categories.querySelectorAll("button")];
}

function renderMenuTitle() {
  const { target } = menu;
  if (!target) return;
  const name = target.user.username;
  const blocking = menu.block.checked && !menu.blockRow.hidden;
  if (target.kind === "msg") {
    menu.title.textContent = blocking
      ? `Block ${name} and report this message`
      : `Report a message from ${name}`;
  } else {
    menu.title.textContent = blocking ? `Block and report ${name}` : `Report ${name}`;
  }
}

function openReportMenu(anchor, target) {
  if (!menu.root.hidden && menu.anchor === anchor) {
    closeReportMenu(true); // the same control again toggles the menu shut
    return;
  }
  menu.target = target;
  menu.anchor = anchor;
  menu.sending = false;
  menu.root.dataset.kind = target.kind;
  menu.note.value = "";
  menu.block.checked = false;
  menu.blockLabel.textContent = `Also block ${target.user.username}`;
  show(menu.blockRow, !state.blocked.has(target.user.id));
  setText(menu.error, "");
  for (const button of categoryButtons()) button.disabled = false;
  renderMenuTitle();
  anchor.setAttribute("aria-expanded", "true");
  show(menu.root, true);
  placeReportMenu();
  categoryButtons()[0].focus();
}

/** Close the menu; `refocus` puts focus back on the control that opened it. */
function closeReportMenu(refocus) {
  if (menu.root.hidden) return;
  show(menu.root, false);
  const anchor = menu.anchor;
  menu.target = null;
  menu.anchor = null;
  if (anchor) {
    anchor.setAttribute("aria-expanded", "false");
    if (refocus && anchor.isConnected) anchor.focus();
  }
}

/** Beside the control that opened it, inside the window; a bottom sheet on narrow screens. */
function placeReportMenu() {
  const root = menu.root;
  if (root.hidden) return;
  if (window.matchMedia(NARROW).matches || !menu.anchor || !menu.anchor.isConnected) {
    if (window.matchMedia(NARROW).matches) {
      root.style.left = "";
      root.style.top = "";
    }
    return;
  }
  // Styles set through the CSSOM, as here, are not inline styles to the CSP.
  const box = menu.anchor.getBoundingClientRect();
  const width = root.offsetWidth;
  const height = root.offsetHeight;
  const maxLeft = window.innerWidth - width - MENU_MARGIN_PX;
  // Under a name on the left, the menu starts where it starts; under a control on the right
  // ("Report" ends a message's head), it ends where that ends: it opens towards the middle.
  const leftward = box.left + box.width / 2 > window.innerWidth / 2;
  const wanted = leftward ? box.right - width : box.left;
  const left = Math.max(MENU_MARGIN_PX, Math.min(wanted, maxLeft));
  let top = box.bottom + MENU_GAP_PX;
  if (top + height > window.innerHeight - MENU_MARGIN_PX) {
    top = box.top - height - MENU_GAP_PX; // no room below: open upwards
  }
  top = Math.max(MENU_MARGIN_PX, top);
  root.style.left = `${Math.round(left)}px`;
  root.style.top = `${Math.round(top)}px`;
}

async function chooseCategory(category) {
  const target = menu.target;
  if (!target || menu.sending) return;
  const note = menu.note.value.trim();
  if ([...note].length > MAX_NOTE) {
    setText(menu.error, `A note can have at most ${MAX_NOTE} characters.`);
    return;
  }
  const alsoBlock = menu.block.checked && !menu.blockRow.hidden;
  menu.sending = true;
  setText(menu.error, "");
  for (const button of categoryButtons()) button.disabled = true;

  let blockFailure = null;
  if (alsoBlock) blockFailure = await blockUser(target.user);
  const frame = { t: "report", category };
  if (target.kind === "msg") frame.msg = target.msg;
  else frame.user = target.user.id;
  if (note) frame.note = note;
  const failure = await sendReport(frame);

  const stillOpen = menu.target === target;
  if (stillOpen) {
    menu.sending = false;
    for (const button of categoryButtons()) button.disabled = false;
  }
  const name = target.user.username;
  if (failure) {
    const text = alsoBlock && !blockFailure
      ? `You blocked ${name}, but the report was not sent: ${failure}`
      : `The report was not sent: ${failure}`;
    if (stillOpen) {
      if (alsoBlock && !blockFailure) show(menu.blockRow, false);
      renderMenuTitle();
      setText(menu.error, text);
      const chosen = categoryButtons().find((b) => b.dataset.category === category);
      if (chosen) chosen.focus(); // one more press tries again
    } else {
      showToast(text, { kind: "error" });
    }
    return;
  }
  if (stillOpen) closeReportMenu(true);
  if (alsoBlock && blockFailure) {
    showToast(THANKS, { detail: `${name} could not be blocked: ${blockFailure}`, block: target.user });
  } else if (alsoBlock) {
    showToast(THANKS, { detail: `You blocked ${name}. They can no longer message you.` });
  } else {
    showToast(THANKS, { block: state.blocked.has(target.user.id) ? null : target.user });
  }
}

/** A request over the socket with a deadline; rejects when not connected or unanswered. */
function requestWithin(frame, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer")), ms);
    request(frame).then(
      (reply) => {
        clearTimeout(timer);
        resolve(reply);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** Send a report; null when it was filed, else what went wrong, in words. */
async function sendReport(frame) {
  if (state.ready) {
    try {
      const reply = await requestWithin(frame, REPORT_TIMEOUT_MS);
      if (reply.t === "reported") return null;
      return reportErrorText(reply.code, reply.retry_after, reply.message);
    } catch {
      // The socket went away (or never answered): try the same report over HTTP.
    }
  }
  const { t, ...body } = frame;
  try {
    const result = await postJson("/api/reports", body, state.token);
    if (result.ok) return null;
    const error = (result.body && result.body.error) || {};
    return reportErrorText(error.code, result.retryAfter * 1000, error.message);
  } catch {
    return "the page is not connected. Check your connection and try again.";
  }
}

function reportErrorText(code, retryAfterMs, message) {
  switch (code) {
    case "not_found":
      return "that message or member could not be found.";
    case "rate_limited":
      return (
        "you have sent many reports in a short time. " +
        `Try again in ${seconds(Number(retryAfterMs) || RETRY_DEFAULT_MS)} s.`
      );
    case "unavailable":
      return "the server is busy. Try again in a moment.";
    default:
      return typeof message === "string" && message ? `${message}.` : "something went wrong.";
  }
}

/** Block a user; null when done, else what went wrong, in words. */
async function blockUser(user) {
  let reply;
  try {
    reply = await requestWithin({ t: "block", user: user.id }, REPORT_TIMEOUT_MS);
  } catch {
    return "the page is not connected.";
  }
  if (reply.t === "ok") {
    state.blocked.add(user.id);
    return null;
  }
  if (reply.code === "not_found") return "that member could not be found.";
  return typeof reply.message === "string" && reply.message ? `${reply.message}.` : "it failed.";
}

menu.close.addEventListener("click", () => closeReportMenu(true));
menu.block.addEventListener("change", renderMenuTitle);

// Up and down walk the categories, as in a menu.
menu.root.addEventListener("keydown", (event) => {
  const buttons = categoryButtons();
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: buttons.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  buttons[(moves[event.key] + buttons.length) % buttons.length].focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !menu.root.hidden) {
    event.preventDefault();
    closeReportMenu(true);
  }
});

// A press outside the menu closes it (a press on its own control toggles it, above).
document.addEventListener("pointerdown", (event) => {
  if (menu.root.hidden) return;
  if (menu.root.contains(event.target)) return;
  if (menu.anchor && menu.anchor.contains(event.target)) return;
  closeReportMenu(false);
});

// Tabbing out of the menu closes it, so it never hangs about behind the focus.
menu.root.addEventListener("focusout", (event) => {
  const next = event.relatedTarget;
  if (next && !menu.root.contains(next) && next !== menu.anchor) closeReportMenu(false);
});

ui.scroller.addEventListener("scroll", placeReportMenu, { passive: true });
window.addEventListener("resize", placeReportMenu);

// -- toasts --------------------------------------------------------------------------------

/**
 * A short message at the bottom of the window. `detail` is a second line; `block` a user to
 * offer blocking; `kind` is "ok" or "error". It goes by itself, but not while pointed at or
 * focused, so its button can be reached.
 */
function showToast(text, { detail = null, block = null, kind = "ok" } = {}) {
  const stays = kind === "error" || block ? TOAST_LONG_MS : TOAST_MS;
  let timer = null;
  const item = h("li", {
    class: `toast toast-${kind}`,
    "data-testid": "toast",
    "data-kind": kind,
    role: kind === "error" ? "alert" : "status",
  });
  const dismiss = () => {
    clearTimeout(timer);
    item.remove();
  };
  const wait = () => {
    clearTimeout(timer);
    timer = setTimeout(dismiss, stays);
  };
  const body = h(
    "div",
    { class: "toast-body" },
    h("p", { class: "toast-text", "data-testid": "toast-text" }, text),
    detail ? h("p", { class: "toast-detail", "data-testid": "toast-detail" }, detail) : null,
  );
  const actions = h("div", { class: "toast-actions" });
  if (block) {
    actions.append(
      h(
        "button",
        {
          type: "button",
          class: "toast-button",
          "data-testid": "toast-block",
          onclick: async (event) => {
            const button = event.currentTarget;
            button.disabled = true;
            const failure = await blockUser(block);
            dismiss();
            if (failure) {
              showToast(`${block.username} was not blocked: ${failure}`, { kind: "error" });
            } else {
              showToast(`You blocked ${block.username}. They can no longer message you.`);
            }
          },
        },
        `Block ${block.username}`,
      ),
    );
  }
  actions.append(
    h(
      "button",
      {
        type: "button",
        class: "toast-close",
        "aria-label": "Dismiss",
        "data-testid": "toast-dismiss",
        onclick: dismiss,
      },
      "×",
    ),
  );
  item.append(body, actions);
  item.addEventListener("pointerenter", () => clearTimeout(timer));
  item.addEventListener("pointerleave", wait);
  item.addEventListener("focusin", () => clearTimeout(timer));
  item.addEventListener("focusout", (event) => {
    if (!item.contains(event.relatedTarget)) wait();
  });
  while (ui.toasts.children.length >= TOASTS_SHOWN) ui.toasts.firstElementChild.remove();
  ui.toasts.append(item);
  wait();
}

// -- notices -------------------------------------------------------------------------------

const NOTICE_LABELS = {
  warning: "Warning from the moderators",
  report: "About your report",
};

function showNotice(text, kind) {
  if (typeof text !== "string") return;
  const item = h(
    "li",
    {
      class: "banner banner-notice",
      "data-testid": "notice-banner",
      "data-kind": kind,
      role: "alert",
    },
    h(
      "div",
      { class: "banner-text" },
      h("strong", { class: "banner-label" }, NOTICE_LABELS[kind] || "Notice"),
      h("span", { "data-testid": "notice-text" }, text),
    ),
    h(
      "button",
      {
        type: "button",
        class: "banner-close",
        "aria-label": "Dismiss",
        "data-testid": "notice-dismiss",
        onclick: () => item.remove(),
      },
      "×",
    ),
  );
  ui.notices.append(item);
}

// -- read marks ----------------------------------------------------------------------------

function loadReadMarks() {
  try {
    const stored = JSON.parse(localStorage.getItem(READ_KEY + state.user.id) || "{}");
    state.readMarks = stored && typeof stored === "object" ? stored : {};
  } catch {
    state.readMarks = {};
  }
}

function saveReadMarks() {
  if (!state.user) return;
  try {
    localStorage.setItem(READ_KEY + state.user.id, JSON.stringify(state.readMarks));
  } catch {
    // storage full or refused: unread counts then last as long as the page
  }
}

function markRead(conv) {
  const top = Math.max(conv.held || 0, ...conv.messages.keys());
  conv.unread = 0;
  if ((state.readMarks[conv.id] || 0) < top) {
    state.readMarks[conv.id] = top;
    saveReadMarks();
  }
}

document.addEventListener("visibilitychange", () => {
  const conv = state.convs.get(state.openId);
  if (conv && document.visibilityState === "visible") {
    markRead(conv);
    renderSidebar();
  }
});

// -- sidebar -------------------------------------------------------------------------------

let sidebarTimer = null;

/** One sidebar render for a burst of messages (a sync page brings up to SYNC_PAGE). */
function renderSidebarSoon() {
  if (sidebarTimer === null) sidebarTimer = setTimeout(renderSidebar, 0);
}

function sidebarOrder(a, b) {
  return b.lastTs - a.lastTs || a.title.localeCompare(b.title);
}

function renderSidebar() {
  clearTimeout(sidebarTimer);
  sidebarTimer = null;
  const convs = [...state.convs.values()].sort(sidebarOrder);
  const dms = convs.filter((c) => c.kind === "dm");
  const rooms = convs.filter((c) => c.kind !== "dm");
  ui.dmList.replaceChildren(...dms.map(convItem));
  ui.roomList.replaceChildren(...rooms.map(convItem));
  show(ui.dmEmpty, dms.length === 0);
  show(ui.roomEmpty, rooms.length === 0);
  const unread = convs.reduce((sum, c) => sum + c.unread, 0);
  document.title = unread ? `(${unread}) chatd` : "chatd";
}

function otherMember(conv) {
  const me = state.user && state.user.id;
  return conv.members.find((m) => m.id !== me) || { id: null, username: conv.title };
}

function convItem(conv) {
  const other = conv.kind === "dm" ? otherMember(conv) : null;
  return h(
    "li",
    { "data-conv": conv.id, "data-user-id": other && other.id },
    h(
      "button",
      {
        type: "button",
        class: `conv-item conv-${conv.kind}`,
        "data-testid": "conversation",
        "data-conv": conv.id,
        "data-kind": conv.kind,
        "aria-current": state.openId === conv.id ? "true" : false,
        onclick: () => openConversation(conv.id),
      },
      h("span", { class: "conv-name", "data-testid": "conversation-name" }, conv.title),
      conv.unread
        ? h(
            "span",
            { class: "badge", "data-testid": "unread", "aria-label": `${conv.unread} unread` },
            String(conv.unread > 99 ? "99+" : conv.unread),
          )
        : null,
    ),
  );
}

function showSidebarError(text) {
  setText(ui.sidebarError, text);
}

function requestErrorText(reply, what) {
  switch (reply.code) {
    case "not_found":
      return what === "dm" ? "No member has that name." : "There is no room by that name.";
    case "blocked":
      return "You cannot message this member.";
    case "rate_limited":
      return `Slow down: try again in ${seconds(reply.retry_after || RETRY_DEFAULT_MS)} s.`;
    default:
      return typeof reply.message === "string" ? reply.message : "That did not work.";
  }
}

async function joinFromForm(form, input, frame, what) {
  showSidebarError("");
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const reply = await request(frame);
    if (reply.t === "conv") {
      input.value = "";
      openConversation(reply.conv);
    } else {
      showSidebarError(requestErrorText(reply, what));
    }
  } catch {
    showSidebarError("Not connected. Try again when the page is back online.");
  } finally {
    button.disabled = false;
  }
}

for (const input of [ui.dmInput, ui.roomInput]) {
  input.addEventListener("input", () => showSidebarError(""));
}

ui.dmForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const user = ui.dmInput.value.trim();
  if (!user) return;
  joinFromForm(ui.dmForm, ui.dmInput, { t: "dm.open", user }, "dm");
});

ui.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = ui.roomInput.value.trim();
  if (!room) return;
  joinFromForm(ui.roomForm, ui.roomInput, { t: "room.join", room }, "room");
});

// -- conversation view ---------------------------------------------------------------------

function openConversation(id) {
  const conv = state.convs.get(id);
  if (!conv) return;
  closeReportMenu(false);
  state.openId = id;
  try {
    sessionStorage.setItem(OPEN_KEY, String(id));
  } catch {
    // not kept across reloads then
  }
  ui.layout.classList.add("conv-open");
  show(ui.placeholder, false);
  show(ui.convView, true);
  renderConversationHeader();
  renderMessages(conv);
  markRead(conv);
  renderSidebar();
  ui.sendInput.focus();
}

function closeConversationView() {
  closeReportMenu(false);
  state.openId = null;
  try {
    sessionStorage.removeItem(OPEN_KEY);
  } catch {
    // nothing stored
  }
  ui.layout.classList.remove("conv-open");
  ui.messages.replaceChildren();
  show(ui.convView, false);
  show(ui.placeholder, true);
}

ui.back.addEventListener("click", () => {
  closeConversationView();
  renderSidebar();
});

function renderConversationHeader() {
  const conv = state.convs.get(state.openId);
  if (!conv) return;
  ui.convView.dataset.conv = String(conv.id);
  ui.convView.dataset.kind = conv.kind;
  ui.convTitle.className = `conv-title conv-${conv.kind}`;
  if (conv.kind === "dm") {
    ui.convTitle.replaceChildren(userName(otherMember(conv)));
    ui.convSub.textContent = "Direct message";
    const other = otherMember(conv);
    show(ui.dmReport, isOther(other));
    ui.dmReport.setAttribute("aria-label", `Report ${other.username}`);
  } else {
    show(ui.dmReport, false);
    ui.convTitle.replaceChildren(conv.title);
    const count = conv.members.length;
    ui.convSub.textContent = `Room · ${count} ${count === 1 ? "member" : "members"}`;
  }
  show(ui.leave, conv.kind === "room");
}

ui.dmReport.addEventListener("click", () => {
  const conv = state.convs.get(state.openId);
  if (conv && conv.kind === "dm") openReportMenu(ui.dmReport, userTarget(otherMember(conv)));
});

ui.leave.addEventListener("click", async () => {
  const conv = state.convs.get(state.openId);
  if (!conv) return;
  ui.leave.disabled = true;
  try {
    const reply = await request({ t: "room.leave", conv: conv.id });
    if (reply.t === "error") showSidebarError(requestErrorText(reply, "room"));
  } catch {
    showSidebarError("Not connected. Try again when the page is back online.");
  } finally {
    ui.leave.disabled = false;
  }
});

ui.earlier.addEventListener("click", () => {
  const conv = state.convs.get(state.openId);
  if (conv) loadEarlier(conv);
});

function renderEarlierButton() {
  const conv = state.convs.get(state.openId);
  show(ui.earlier, Boolean(conv && conv.base));
}

function renderMessages(conv) {
  const messages = [...conv.messages.values()].sort((a, b) => a.seq - b.seq);
  ui.messages.replaceChildren(...messages.map(messageElement));
  for (const entry of state.outbox.values()) {
    if (entry.conv === conv.id) ui.messages.append(pendingElement(entry));
  }
  renderEarlierButton();
  scrollToBottom();
}

function nearBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

/** The quiet "Report" control of another member's message, in its `.msg-actions`. */
function reportMessageButton(message) {
  if (!isOther(message.from) || message.removed || message.provisional) return null;
  return h(
    "button",
    {
      type: "button",
      class: "quiet msg-report",
      "data-testid": "report-message",
      "aria-haspopup": "dialog",
      "aria-label": `Report this message from ${message.from.username}`,
      onclick: (event) => openReportMenu(event.currentTarget, messageTarget(message)),
    },
    "Report",
  );
}

/** One message; its data attributes name it, `.msg-actions` holds what can be done with it. */
function messageElement(message) {
  const mine = Boolean(state.user && message.from.id === state.user.id);
  const classes = ["msg"];
  if (mine) classes.push("mine");
  if (message.removed) classes.push("removed");
  if (message.provisional) classes.push("sent");
  const when = new Date(message.ts);
  return h(
    "li",
    {
      class: classes.join(" "),
      "data-testid": "message",
      "data-id": message.id,
      "data-conv": message.conv,
      "data-seq": message.seq,
      "data-from": message.from.id,
      "data-state": message.provisional ? "sent" : "delivered",
    },
    h(
      "div",
      { class: "msg-head" },
      userName(message.from, "msg-from"),
      h(
        "time",
        {
          class: "msg-time",
          "data-testid": "message-time",
          datetime: when.toISOString(),
          title: fullFormat.format(when),
        },
        shortTime(message.ts),
      ),
      h(
        "span",
        { class: "msg-actions", "data-testid": "message-actions" },
        reportMessageButton(message),
      ),
    ),
    message.removed
      ? h("p", { class: "msg-text msg-gone", "data-testid": "message-text" }, "message removed")
      : h("p", { class: "msg-text", "data-testid": "message-text" }, message.text ?? ""),
  );
}

/** Put a message's element in seq order, before the pending ones; replace an older copy. */
function placeMessageElement(message) {
  const pin = nearBottom();
  const node = messageElement(message);
  const old = ui.messages.querySelector(`li[data-seq="${message.seq}"]`);
  if (old) {
    old.replaceWith(node);
    return;
  }
  let before = ui.messages.querySelector("li.pending");
  let cursor = before ? before.previousElementSibling : ui.messages.lastElementChild;
  while (cursor && Number(cursor.dataset.seq) > message.seq) {
    before = cursor;
    cursor = cursor.previousElementSibling;
  }
  ui.messages.insertBefore(node, before);
  if (pin) scrollToBottom();
}

function pendingElement(entry) {
  const failed = entry.status === "failed";
  const me = state.user || { id: null, username: "" };
  return h(
    "li",
    {
      class: `msg mine pending${failed ? " failed" : ""}`,
      "data-testid": "message",
      "data-conv": entry.conv,
      "data-cmid": entry.cmid,
      "data-from": me.id,
      "data-state": failed ? "failed" : "pending",
    },
    h(
      "div",
      { class: "msg-head" },
      userName(me, "msg-from"),
      h(
        "span",
        { class: "msg-time", "data-testid": "message-time" },
        failed ? "Not sent" : entry.status === "waiting" ? "Waiting to send…" : "Sending…",
      ),
      h("span", { class: "msg-actions", "data-testid": "message-actions" }),
    ),
    h("p", { class: "msg-text", "data-testid": "message-text" }, entry.text),
    failed
      ? h(
          "p",
          { class: "msg-error" },
          h("span", {}, entry.error || "Not sent."),
          " ",
          h(
            "button",
            {
              type: "button",
              class: "link",
              "data-testid": "discard",
              onclick: () => {
                state.outbox.delete(entry.cmid);
                removePendingElement(entry.cmid);
              },
            },
            "Discard",
          ),
        )
      : null,
  );
}

function findPendingElement(cmid) {
  return ui.messages.querySelector(`li.pending[data-cmid="${CSS.escape(cmid)}"]`);
}

function placePendingElement(entry) {
  const node = pendingElement(entry);
  const old = findPendingElement(entry.cmid);
  if (old) old.replaceWith(node);
  else ui.messages.append(node);
}

function removePendingElement(cmid) {
  const old = findPendingElement(cmid);
  if (old) old.remove();
}

// -- sending -------------------------------------------------------------------------------

/*
 * The outbox keeps what was typed in order. Normally every send goes out at once. Once the
 * server refuses one for now (rate_limited, unavailable), sends wait: after retry_after the
 * oldest waiting one is sent again with its cmid, and each one that lands lets the next go.
 * So messages keep their order and a throttled page adds one refusal per wait, not a flood
 * (refusals past twice the burst close the connection, 4008).
 */

function holdSends(wait) {
  clearTimeout(state.holdTimer);
  state.holdTimer = setTimeout(releaseNextSend, wait);
}

function releaseNextSend() {
  state.holdTimer = null;
  for (const entry of state.outbox.values()) {
    if (entry.status === "waiting") {
      transmit(entry);
      return;
    }
  }
}

function sendsWaiting() {
  if (state.holdTimer !== null) return true;
  for (const entry of state.outbox.values()) if (entry.status === "waiting") return true;
  return false;
}

/** A send was committed (its ack, or its msg, came): forget it and let the next one go. */
function sendSettled(cmid) {
  state.outbox.delete(cmid);
  if (state.holdTimer === null) releaseNextSend();
}

function transmit(entry) {
  if (!state.outbox.has(entry.cmid)) return;
  entry.status = "sending";
  if (state.ready) sendFrame({ t: "send", conv: entry.conv, text: entry.text, cmid: entry.cmid });
  // Not connected: `ready` sends it again, with the same cmid.
  if (state.openId === entry.conv) placePendingElement(entry);
}

function sendMessage() {
  const conv = state.convs.get(state.openId);
  const text = ui.sendInput.value.trim();
  if (!conv || !text) return;
  if ([...text].length > MAX_TEXT) {
    showSidebarError(`A message can have at most ${MAX_TEXT} characters.`);
    return;
  }
  const entry = { cmid: newCmid(), conv: conv.id, text, status: "waiting", error: null };
  const queued = sendsWaiting(); // behind messages the server held back: keep typed order
  state.outbox.set(entry.cmid, entry);
  ui.sendInput.value = "";
  if (queued) placePendingElement(entry);
  else transmit(entry);
  scrollToBottom();
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
  ui.sendInput.focus();
});

ui.sendInput.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter makes a new line; Enter that ends an IME composition does neither.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});

// -- start ---------------------------------------------------------------------------------

function start() {
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    token = null;
  }
  if (token) startSession(token, null);
  else showAuth();
}

start();
