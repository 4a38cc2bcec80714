// Talking to the gateway: JSON calls and server-sent-event streams, with the bearer token
// (if the user gave one) on every request, and a token prompt when a route answers 401.
"use strict";

const TOKEN_KEY = "taskhub.token";

const api = {
  token() { return localStorage.getItem(TOKEN_KEY) || ""; },

  headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = api.token();
    if (t) h["Authorization"] = "Bearer " + t;
    return h;
  },

  // A JSON call. Rejects with an Error whose .status and .message come from the answer.
  async call(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const init = {method, headers: api.headers(body === undefined ? {} : {"Content-Type": "application/json"})};
      if (body !== undefined) init.body = JSON.stringify(body);
      const resp = await fetch(path, init);
      if (resp.status === 401 && attempt === 0 && await askToken("This server needs a token for " + path + ".")) continue;
      const text = await resp.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (e) { data = {message: text}; }
      if (!resp.ok) {
        const err = new Error((data && (data.message || data.msg || data.detail || data.retmsg)) || resp.statusText);
        err.status = resp.status;
        // A token that may only read: stop offering what it cannot do (cancel, delete, create, ...).
        if (resp.status === 403 && method !== "GET") document.body.classList.add("read-only");
        throw err;
      }
      return data;
    }
  },
  get(path) { return api.call("GET", path); },
  post(path, body) { return api.call("POST", path, body === undefined ? {} : body); },
  del(path) { return api.call("DELETE", path); },

  // FATE Flow routes: POST with a JSON body, {retcode, retmsg, data} envelope.
  async flow(path, body) {
    const answer = await api.post("/v1/" + path, body || {});
    if (answer && answer.retcode !== 0) {
      const err = new Error(answer.retmsg || ("retcode " + answer.retcode));
      err.retcode = answer.retcode;
      throw err;
    }
    return answer ? answer.data : null;
  },

  // Follows a server stream as server-sent events (fetch, so the token header goes along).
  // onMessage(obj) for each `data:` frame; resolves when the server ends the stream; rejects
  // on an `event: error` frame or a broken connection. `signal` aborts it.
  async stream(path, onMessage, signal) {
    for (let attempt = 0; ; attempt++) {
      const resp = await fetch(path, {headers: api.headers({"Accept": "text/event-stream"}), signal});
      if (resp.status === 401 && attempt === 0 && await askToken("This server needs a token for " + path + ".")) continue;
      if (!resp.ok) {
        let message = resp.statusText;
        try { message = (await resp.json()).message || message; } catch (e) { /* not JSON */ }
        const err = new Error(message);
        err.status = resp.status;
        throw err;
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (!data) continue;
          const obj = JSON.parse(data);
          if (event === "error") {
            const err = new Error(obj.error ? obj.error.message : "stream error");
            err.status = 500;
            throw err;
          }
          onMessage(obj);
        }
      }
      return;
    }
  },
};

// -- small DOM helpers ---------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(message, kind) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = kind || "error";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 6000);
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// Ask for a token; resolves true when the user gave one (the call is then tried again).
function askToken(reason) {
  const dialog = document.getElementById("token-dialog");
  if (!dialog) {  // a page without the dialog (the API page)
    const given = window.prompt(reason || "API token", api.token());
    if (given) localStorage.setItem(TOKEN_KEY, given.trim());
    return Promise.resolve(Boolean(given));
  }
  if (dialog.open) return Promise.resolve(false);
  document.getElementById("token-reason").textContent = reason || "API token (sent as Authorization: Bearer).";
  const input = document.getElementById("token-input");
  input.value = api.token();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "ok" && input.value.trim()) {
        localStorage.setItem(TOKEN_KEY, input.value.trim());
        resolve(true);
      } else {
        if (dialog.returnValue === "clear") localStorage.removeItem(TOKEN_KEY);
        resolve(false);
      }
    }, {once: true});
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function fmtTime(ms) {
  ms = Number(ms);
  if (!ms) return "";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}
