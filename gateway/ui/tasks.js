// The task list (live, filtered, paged) and one task's page (fields, live log).
"use strict";

const STATUSES = ["UNKNOWN", "NEW", "SCHEDULING", "SCHEDULED", "QUEUED", "PENDING", "RESTORING", "RUNNING",
                  "SUCCESS", "CANCELLING", "CANCELLED", "FAILED"];
const TERMINAL = new Set(["SUCCESS", "CANCELLED", "FAILED"]);
const PAGE_SIZE = 50;
const MAX_LOG_LINES_SHOWN = 10000;
const DRAW_INTERVAL = 200;  // ms

const statusOf = (task) => String(task.status || "").replace("TASK_STATUS_", "");
const nsParam = () => encodeURIComponent(currentNamespace());

function statusBadge(status) {
  return h("span", {class: "badge st-" + status.toLowerCase()}, status.toLowerCase());
}

function progressBar(task) {
  const pct = Math.max(0, Math.min(100, Number(task.progress) || 0));
  return h("div", {class: "progress", title: pct + "%"}, h("div", {class: "bar st-" + statusOf(task).toLowerCase(), style: `width:${pct}%`}),
           h("span", {}, pct + "%"));
}

function taskDuration(task, now) {
  const start = Number(task.start_time_ms), done = Number(task.done_time_ms);
  if (!start) return "";
  return fmtDuration((done || now) - start);
}

// Re-run a stream whenever it breaks, with a short backoff, until `stopped()`.
async function keepStreaming(open, stopped, onState) {
  let delay = 250;
  while (!stopped()) {
    try {
      onState && onState("live");
      const ended = await open();
      if (ended || stopped()) return;
      delay = 250;
    } catch (e) {
      if (stopped()) return;
      if (e.status && e.status < 500 && e.status !== 499) { onState && onState("error", e); return; }
      onState && onState("reconnecting", e);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

// ----------------------------------------------------------------------- the list
function renderTasks(view) {
  let stopped = false;
  const controller = new AbortController();
  const state = {status: "", search: "", pages: [""], page: 0, next: "", rows: new Map(), tasks: []};

  const statusSelect = h("select", {id: "status-filter", onchange: () => { state.status = statusSelect.value; reload(true); }},
    h("option", {value: ""}, "any status"),
    h("option", {value: "active"}, "unfinished"),
    STATUSES.map((s) => h("option", {value: s}, s.toLowerCase())));
  const search = h("input", {id: "task-search", type: "search", placeholder: "name or id", size: 18});
  let searchTimer = 0;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.search = search.value.trim(); reload(true); }, 250);
  });
  const live = h("span", {class: "live", id: "live-state"}, "connecting");
  const tbody = h("tbody", {id: "task-rows"});
  const older = h("button", {class: "ghost", id: "older", onclick: () => { state.pages.push(state.next); state.page++; reload(false); }}, "older ›");
  const newer = h("button", {class: "ghost", id: "newer", onclick: () => { state.pages.pop(); state.page--; reload(false); }}, "‹ newer");
  const pageInfo = h("span", {class: "muted"});

  view.append(
    h("section", {class: "toolbar"}, h("h1", {}, "Tasks"), statusSelect, search, live,
      h("span", {class: "spacer"}), h("button", {id: "new-task", onclick: () => form.hidden = !form.hidden}, "+ New task")),
    createForm(),
    h("table", {class: "grid tasks"},
      h("thead", {}, h("tr", {}, ["id", "name", "namespace", "status", "progress", "node", "duration", "created", ""].map((c) => h("th", {}, c)))),
      tbody),
    h("div", {class: "pager"}, newer, pageInfo, older));
  const form = view.querySelector("#create-form");

  function createForm() {
    const f = h("form", {id: "create-form", class: "card", hidden: true},
      h("label", {}, "name ", h("input", {name: "name", placeholder: "my task", size: 16})),
      h("label", {}, "command ", h("input", {name: "command", required: true, placeholder: "echo hello; sleep 5", size: 40})),
      h("label", {}, "namespace ", h("input", {name: "namespace", placeholder: "default", size: 10})),
      h("label", {}, "timeout s ", h("input", {name: "timeout", type: "number", min: 0, step: "any", size: 5})),
      h("label", {}, "retries ", h("input", {name: "retries", type: "number", min: 0, max: 100, size: 3})),
      h("button", {type: "submit", id: "create-submit"}, "Create"));
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const d = Object.fromEntries(new FormData(f));
      const ns = d.namespace || (currentNamespace() !== "*" ? currentNamespace() : "");
      const spec = {type: "TASK_TYPE_COMMAND", name: d.name, argv: ["sh", "-c", d.command], namespace: ns,
                    timeout_seconds: Number(d.timeout) || 0, max_retries: Number(d.retries) || 0};
      try {
        const task = await api.post("/v1/tasks", spec);
        toast(`task ${task.id} created`, "ok");
        f.reset();
        upsert([task]);
      } catch (e) { toast("create failed: " + e.message); }
    });
    return f;
  }

  function matches(task) {
    const st = statusOf(task);
    if (state.status === "active" && TERMINAL.has(st)) return false;
    if (state.status && state.status !== "active" && st !== state.status) return false;
    if (state.search && !/^\d+$/.test(state.search) && !String(task.spec.name || "").includes(state.search)) return false;
    if (state.search && /^\d+$/.test(state.search) && task.id !== state.search) return false;
    const ns = currentNamespace();
    return ns === "*" || task.spec.namespace === (ns || "default");
  }

  function row(task) {
    const st = statusOf(task);
    const actions = h("td", {class: "actions"});
    if (!TERMINAL.has(st) && st !== "CANCELLING")
      actions.append(h("button", {class: "small", "data-action": "cancel", onclick: () => cancelTask(task)}, "cancel"));
    actions.append(h("button", {class: "small danger", "data-action": "delete", onclick: () => deleteTask(task)}, "delete"));
    return h("tr", {dataset: {id: task.id, status: st}},
      h("td", {}, h("a", {href: `#/tasks/${task.id}`}, task.id)),
      h("td", {class: "name"}, h("a", {href: `#/tasks/${task.id}`}, task.spec.name || "—")),
      h("td", {}, task.spec.namespace),
      h("td", {class: "status"}, statusBadge(st)),
      h("td", {}, progressBar(task)),
      h("td", {}, task.node || ""),
      h("td", {class: "duration", dataset: {start: task.start_time_ms, done: task.done_time_ms}}, taskDuration(task, Date.now())),
      h("td", {class: "muted"}, fmtTime(task.create_time_ms)),
      actions);
  }

  function draw() {
    tbody.replaceChildren(...state.tasks.map(row));
    if (!state.tasks.length) tbody.append(h("tr", {}, h("td", {colspan: 9, class: "empty"}, "no tasks")));
    newer.disabled = state.page === 0;
    older.disabled = !state.next;
    pageInfo.textContent = `page ${state.page + 1}`;
  }

  // Live changes: update rows in place; new matching tasks go on top of the first page.
  function upsert(tasks) {
    let changed = false;
    for (const t of tasks) {
      const i = state.tasks.findIndex((x) => x.id === t.id);
      if (i >= 0) {
        if (Number(t.update_time_ms) >= Number(state.tasks[i].update_time_ms)) { state.tasks[i] = t; changed = true; }
      } else if (state.page === 0 && matches(t) && (!state.tasks.length || Number(t.id) > Number(state.tasks[state.tasks.length - 1].id) || state.tasks.length < PAGE_SIZE)) {
        state.tasks.push(t);
        changed = true;
      }
    }
    if (changed) {
      state.tasks.sort((a, b) => Number(b.id) - Number(a.id));
      if (state.tasks.length > PAGE_SIZE) { state.tasks.length = PAGE_SIZE; state.next = String(state.tasks[PAGE_SIZE - 1].id); }
      draw();
    }
  }

  function removeIds(ids) {
    const before = state.tasks.length;
    state.tasks = state.tasks.filter((t) => !ids.includes(t.id));
    if (state.tasks.length !== before) draw();
  }

  async function cancelTask(task) {
    if (!await confirmAction(`Cancel task ${task.id} (${task.spec.name || "unnamed"})?`)) return;
    try {
      const r = await api.post(`/v1/tasks/${task.id}:cancel?namespace=${encodeURIComponent(task.spec.namespace)}`, {reason: "from the dashboard"});
      upsert([r.task]);
    } catch (e) { toast(`cancel failed: ${e.message}`); }
  }

  async function deleteTask(task) {
    const st = statusOf(task);
    const force = !TERMINAL.has(st);
    if (!await confirmAction(`Delete task ${task.id}${force ? " (it is " + st.toLowerCase() + ": it will be stopped first)" : ""}? Its log goes too.`)) return;
    try {
      await api.del(`/v1/tasks/${task.id}?namespace=${encodeURIComponent(task.spec.namespace)}${force ? "&force=true" : ""}`);
      removeIds([task.id]);
    } catch (e) { toast(`delete failed: ${e.message}`); }
  }

  async function reload(resetPages) {
    if (resetPages) { state.pages = [""]; state.page = 0; }
    const q = state.search;
    try {
      if (/^\d+$/.test(q)) {
        let task = null;
        try { task = await api.get(`/v1/tasks/${q}?namespace=${nsParam()}`); } catch (e) { if (e.status !== 404) throw e; }
        state.tasks = task ? [task] : [];
        state.next = "";
      } else {
        let url = `/v1/tasks?namespace=${nsParam()}&limit=${PAGE_SIZE}`;
        if (state.status === "active") url += STATUSES.filter((s) => !TERMINAL.has(s)).map((s) => "&statuses=" + s).join("");
        else if (state.status) url += "&statuses=" + state.status;
        if (q) url += "&name_contains=" + encodeURIComponent(q);
        if (state.pages[state.page]) url += "&page_token=" + state.pages[state.page];
        const r = await api.get(url);
        state.tasks = r.tasks || [];
        state.next = r.next_page_token || "";
      }
      draw();
    } catch (e) { toast("listing tasks failed: " + e.message); }
  }

  // Durations of running tasks tick.
  const ticker = setInterval(() => {
    const now = Date.now();
    for (const td of tbody.querySelectorAll("td.duration")) {
      const start = Number(td.dataset.start), done = Number(td.dataset.done);
      if (start && !done) td.textContent = fmtDuration(now - start);
    }
  }, 1000);

  reload(true).then(() => keepStreaming(
    // A fresh list after a reconnect, so nothing that changed meanwhile is missed.
    async () => {
      let first = true;
      await api.stream(`/v1/tasks:watch?namespace=${nsParam()}`, (msg) => {
        if (first) { first = false; live.textContent = "live"; live.className = "live on"; if (state.reconnected) reload(false); state.reconnected = true; return; }
        if (msg.overflow) reload(false);
        if (msg.tasks && msg.tasks.length) upsert(msg.tasks);
        if (msg.deleted_ids && msg.deleted_ids.length) removeIds(msg.deleted_ids);
      }, controller.signal);
      return false;
    },
    () => stopped,
    (s) => { if (s !== "live") { live.textContent = s; live.className = "live"; } }));

  return () => { stopped = true; controller.abort(); clearInterval(ticker); };
}

// ----------------------------------------------------------------------- one task
function renderTask(view, id) {
  let stopped = false;
  const controllers = new Set();
  const logState = {next: 0, shown: 0, pending: [], ansi: {}, reconnects: 0, ended: false, abort: null, drawPending: false};
  const fields = h("dl", {class: "fields", id: "task-fields"});
  const head = h("div", {class: "toolbar"});
  const logBox = h("pre", {class: "log", id: "log"});
  const logInfo = h("span", {class: "muted", id: "log-info"});
  let task = null;

  view.append(head, h("div", {class: "split"},
    h("section", {class: "card"}, h("h2", {}, "Fields"), fields),
    h("section", {class: "card logcard"},
      h("div", {class: "toolbar"}, h("h2", {}, "Log"), logInfo, h("span", {class: "spacer"}),
        h("label", {class: "muted"}, h("input", {type: "checkbox", id: "follow-scroll", checked: true}), " follow"),
        h("button", {class: "ghost", id: "download-log", onclick: download}, "download")),
      logBox)));

  function drawTask(t) {
    task = t;
    const st = statusOf(t);
    const buttons = [];
    if (!TERMINAL.has(st) && st !== "CANCELLING") buttons.push(h("button", {id: "cancel-task", onclick: cancel}, "Cancel"));
    buttons.push(h("button", {class: "danger", id: "delete-task", onclick: remove}, "Delete"));
    head.replaceChildren(h("a", {href: "#/tasks", class: "ghost"}, "‹ tasks"),
      h("h1", {}, `Task ${t.id}`, t.spec.name ? ` · ${t.spec.name}` : ""), statusBadge(st), progressBar(t),
      h("span", {class: "spacer"}), ...buttons);
    head.dataset.status = st;
    const spec = t.spec;
    const what = spec.type === "TASK_TYPE_PYTHON" ? `${spec.callable}(${spec.input_json || ""})` : (spec.argv || []).join(" ");
    const rows = [
      ["id", t.id], ["uid", t.uid], ["namespace", spec.namespace], ["type", String(spec.type).replace("TASK_TYPE_", "").toLowerCase()],
      ["runs", what], ["status", st.toLowerCase()], ["progress", (t.progress || 0) + "%"], ["node", t.node],
      ["pid / ppid", t.pid ? `${t.pid} / ${t.ppid}` : ""], ["exit code", t.done_time_ms && spec.type !== "TASK_TYPE_PYTHON" ? t.exit_code : ""],
      ["retries", `${t.retries} of ${spec.max_retries}`], ["priority", spec.priority], ["timeout", spec.timeout_seconds ? spec.timeout_seconds + " s" : ""],
      ["created", fmtTime(t.create_time_ms)], ["started", fmtTime(t.start_time_ms)], ["done", fmtTime(t.done_time_ms)],
      ["duration", taskDuration(t, Date.now())], ["queue reason", t.queue_reason], ["error", t.error], ["result", t.result],
      ["response", t.response_json && t.response_json !== "{}" ? t.response_json : ""],
    ];
    fields.replaceChildren(...rows.filter(([, v]) => v !== "" && v !== undefined && v !== null)
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {dataset: {field: k}}, String(v))]));
  }

  async function cancel() {
    if (!await confirmAction(`Cancel task ${task.id}?`)) return;
    try { drawTask((await api.post(`/v1/tasks/${id}:cancel?namespace=*`, {reason: "from the dashboard"})).task); }
    catch (e) { toast("cancel failed: " + e.message); }
  }

  async function remove() {
    const force = !TERMINAL.has(statusOf(task));
    if (!await confirmAction(`Delete task ${task.id} and its log?`)) return;
    try { await api.del(`/v1/tasks/${id}?namespace=*${force ? "&force=true" : ""}`); location.hash = "#/tasks"; }
    catch (e) { toast("delete failed: " + e.message); }
  }

  // Lines are taken in as they arrive (so a resume knows where to start) and drawn once per
  // frame: a long backlog costs one layout, and lines that would be trimmed at once are never drawn.
  function addLines(lines) {
    for (const line of lines) {
      const seq = Number(line.seq);
      if (seq < logState.next) continue;  // already shown (a resumed stream overlaps nothing, but be sure)
      logState.pending.push(line);
      logState.next = seq + 1;
    }
    if (logState.pending.length > 2 * MAX_LOG_LINES_SHOWN) logState.pending.splice(0, logState.pending.length - MAX_LOG_LINES_SHOWN);
    scheduleDraw();
  }

  function scheduleDraw() {
    if (logState.drawPending) return;
    logState.drawPending = true;
    const draw = () => { if (logState.drawPending) { logState.drawPending = false; logState.drawnAt = performance.now(); drawLines(); } };
    // At most one layout per DRAW_INTERVAL while a backlog pours in; at once when lines trickle.
    const wait = Math.max(0, (logState.drawnAt || 0) + DRAW_INTERVAL - performance.now());
    if (document.hidden || wait > 0) setTimeout(() => requestAnimationFrame(draw), wait || 250); else requestAnimationFrame(draw);
  }

  function drawLines() {
    let pending = logState.pending;
    logState.pending = [];
    if (pending.length > MAX_LOG_LINES_SHOWN) pending = pending.slice(-MAX_LOG_LINES_SHOWN);
    const frag = document.createDocumentFragment();
    for (const line of pending) {
      const el = document.createElement("div");
      el.className = "line s-" + String(line.stream || "").replace("LOG_STREAM_", "").toLowerCase();
      el.dataset.seq = line.seq;
      const num = document.createElement("span");
      num.className = "seq";
      num.textContent = line.seq;
      const ts = document.createElement("span");
      ts.className = "ts";
      ts.textContent = fmtTime(line.time_ms).slice(11);
      const text = document.createElement("span");
      text.className = "text";
      logState.ansi = renderAnsi(text, line.text || "", logState.ansi);
      el.append(num, ts, text);
      frag.append(el);
    }
    logBox.append(frag);
    logState.shown += pending.length;
    // A huge log keeps only its last lines in the page (the download has them all).
    if (logState.shown > MAX_LOG_LINES_SHOWN) {
      let trimmed = logBox.querySelector(".log-trimmed");
      if (!trimmed) { trimmed = h("div", {class: "log-trimmed"}); logBox.prepend(trimmed); }
      const cut = document.createRange();
      cut.setStartAfter(trimmed);
      cut.setEndBefore(logBox.querySelectorAll(".line")[logState.shown - MAX_LOG_LINES_SHOWN]);
      cut.deleteContents();
      logState.shown = MAX_LOG_LINES_SHOWN;
      trimmed.textContent = `… ${logBox.querySelector(".line").dataset.seq} earlier lines: download the log to see them`;
    }
    const follow = document.getElementById("follow-scroll");
    if (follow && follow.checked) logBox.scrollTop = logBox.scrollHeight;
    drawLogInfo();
  }

  // What the page shows (the test reads these data- attributes once the log has ended).
  function drawLogInfo(extra) {
    logInfo.textContent = `${logState.next} lines` + (logState.reconnects ? ` · resumed ${logState.reconnects}×` : "") +
      (logState.ended ? " · ended" : "") + (extra ? " · " + extra : "");
    logInfo.dataset.lines = logState.next;
    logInfo.dataset.reconnects = logState.reconnects;
    logInfo.dataset.ended = logState.ended && !logState.pending.length && !logState.drawPending;
  }

  // The log follows live; a broken stream resumes from the next line number, so nothing is lost or doubled.
  function followLog() {
    let opened = 0;
    return keepStreaming(async () => {
      const c = new AbortController();
      controllers.add(c);
      logState.abort = c;
      if (opened++) { logState.reconnects++; }
      try {
        await api.stream(`/v1/tasks/${id}/logs?namespace=*&offset=${logState.next}`, (msg) => {
          if (msg.lines && msg.lines.length) addLines(msg.lines);
          if (msg.end) { logState.ended = true; scheduleDraw(); }
        }, c.signal);
      } finally { controllers.delete(c); }
      if (!logState.ended) throw Object.assign(new Error("log stream closed early"), {status: 503});
      return true;
    }, () => stopped || logState.ended, (s, e) => { if (s === "reconnecting") drawLogInfo("reconnecting"); if (s === "error") toast("log: " + e.message); });
  }

  function followTask() {
    return keepStreaming(async () => {
      const c = new AbortController();
      controllers.add(c);
      try { await api.stream(`/v1/tasks/${id}:wait?namespace=*`, drawTask, c.signal); } finally { controllers.delete(c); }
      return true;
    }, () => stopped, (s, e) => { if (s === "error") toast("task: " + e.message); });
  }

  async function download() {
    try {
      const lines = [];
      await api.stream(`/v1/tasks/${id}/logs?namespace=*&follow=false`, (msg) => { for (const l of msg.lines || []) lines.push(stripAnsi(l.text)); });
      const blob = new Blob([lines.join("\n") + "\n"], {type: "text/plain"});
      const a = h("a", {href: URL.createObjectURL(blob), download: `task-${id}.log`});
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) { toast("download failed: " + e.message); }
  }

  api.get(`/v1/tasks/${id}?namespace=*`).then((t) => { drawTask(t); followTask(); followLog(); })
    .catch((e) => view.replaceChildren(h("p", {class: "empty"}, `task ${id}: ${e.message}`), h("a", {href: "#/tasks"}, "back to tasks")));

  // For tests and debugging: break the log stream as a network failure would.
  window.taskhubUI.dropLogStream = () => { if (logState.abort) logState.abort.abort(); };
  const ticker = setInterval(() => { if (task && !TERMINAL.has(statusOf(task))) drawLogInfo(); }, 1000);
  return () => { stopped = true; for (const c of controllers) c.abort(); clearInterval(ticker); };
}
