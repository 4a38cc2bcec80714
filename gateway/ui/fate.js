// FATE Flow jobs over the gateway's FATE Flow routes (/v1/job/..., /v1/tracking/...):
// the job list, and a job as its DSL graph coloured by status, with each component's
// parameters, metrics (charts) and output data (a table), and each party's status. With each
// party on its own server, a server's tasks are its own parties' (the initiator's also the
// others', as their servers report them): its dashboard is its party's view.
"use strict";

const FATE_STATUS_ORDER = ["failed", "timeout", "running", "waiting", "ready", "canceled", "success", "pass"];  // worst first; "pass" only when every task passed

function fateStatusBadge(status) {
  return h("span", {class: "badge fs-" + String(status || "unknown").toLowerCase()}, String(status || "unknown").toLowerCase());
}

// One party's status from its tasks: the worst one, and "running" while some are done and others wait.
function partyStatus(statuses) {
  for (const s of ["failed", "timeout", "canceled", "running"]) if (statuses.includes(s)) return s;
  if (statuses.every((s) => s === "pass")) return "pass";
  if (statuses.every((s) => s === "success" || s === "pass")) return "success";
  return statuses.some((s) => s === "success") ? "running" : "waiting";
}

function partiesTable(tasks) {
  const parties = new Map();  // "role party" -> its tasks, in the order the server lists them
  for (const t of tasks) {
    const key = `${t.f_role} ${t.f_party_id}`;
    if (!parties.has(key)) parties.set(key, []);
    parties.get(key).push(t);
  }
  const rows = [...parties.entries()].map(([key, mine]) => {
    const statuses = mine.map((t) => String(t.f_status || "").toLowerCase());
    const st = partyStatus(statuses);
    const done = statuses.filter((s) => s === "success" || s === "pass").length;
    const here = mine.some((t) => t.f_run_on_this_party !== false);
    const errors = mine.map((t) => t.f_error_report).filter(Boolean);
    return h("tr", {dataset: {party: key, status: st}},
      h("td", {}, mine[0].f_role), h("td", {}, String(mine[0].f_party_id)), h("td", {}, fateStatusBadge(st)),
      h("td", {}, `${done} / ${mine.length}`), h("td", {class: "muted"}, here ? "this server" : "its own server"),
      h("td", {class: "muted"}, errors[0] || ""));
  });
  return h("table", {class: "grid compact", id: "party-rows"},
    h("thead", {}, h("tr", {}, ["role", "party", "status", "tasks done", "runs on", "error"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows : [h("tr", {}, h("td", {colspan: 6, class: "empty"}, "no tasks yet"))]));
}

function renderFateJobs(view) {
  const tbody = h("tbody", {id: "fate-rows"});
  view.append(h("section", {class: "toolbar"}, h("h1", {}, "FATE jobs")),
    h("table", {class: "grid"}, h("thead", {}, h("tr", {}, ["job id", "status", "role", "party", "progress", "started", "elapsed", "description"].map((c) => h("th", {}, c)))), tbody));
  async function load() {
    try {
      const data = await api.flow("job/list/job", {limit: 50, page: 1});
      const jobs = (data && data.jobs) || [];
      tbody.replaceChildren(...jobs.map((j) => h("tr", {dataset: {job: j.job_id}},
        h("td", {}, h("a", {href: `#/fate/${encodeURIComponent(j.job_id)}`}, j.job_id)),
        h("td", {}, fateStatusBadge(j.status)), h("td", {}, j.role), h("td", {}, j.party_id),
        h("td", {}, progressBar({progress: j.progress, status: "TASK_STATUS_" + (j.status === "success" ? "SUCCESS" : "RUNNING")})),
        h("td", {class: "muted"}, fmtTime(j.start_time)), h("td", {}, fmtDuration(j.elapsed)), h("td", {}, j.description || ""))));
      if (!jobs.length) tbody.append(h("tr", {}, h("td", {colspan: 8, class: "empty"}, "no FATE jobs")));
    } catch (e) {
      tbody.replaceChildren(h("tr", {}, h("td", {colspan: 8, class: "empty"}, "FATE Flow routes unavailable: " + e.message)));
    }
  }
  load();
  const timer = setInterval(load, 3000);
  return () => clearInterval(timer);
}

function parseMaybeJson(v) {
  if (typeof v !== "string") return v || {};
  try { return JSON.parse(v); } catch (e) { return {}; }
}

// Edges of a DSL (v2 `input`, v1 `args`): every "component.output" reference.
function dslEdges(components) {
  const names = new Set(Object.keys(components));
  const edges = [];
  const walk = (to, value) => {
    if (typeof value === "string") {
      const from = value.split(".")[0] === "pipeline" ? null : value.split(".")[0];
      if (from && names.has(from) && from !== to) edges.push([from, to]);
    } else if (Array.isArray(value)) value.forEach((v) => walk(to, v));
    else if (value && typeof value === "object") Object.values(value).forEach((v) => walk(to, v));
  };
  for (const [name, c] of Object.entries(components)) walk(name, [c.input, c.args]);
  return edges;
}

function dslGraph(components, statusOfComponent, onSelect) {
  const names = Object.keys(components);
  const edges = dslEdges(components);
  const level = Object.fromEntries(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++)  // longest path from a source (DSLs are small)
    for (const [a, b] of edges) level[b] = Math.max(level[b], level[a] + 1);
  const columns = [];
  for (const n of names) (columns[level[n]] = columns[level[n]] || []).push(n);
  const boxW = 170, boxH = 46, gapX = 60, gapY = 22;
  const rows = Math.max(...columns.map((c) => c.length), 1);
  const width = columns.length * (boxW + gapX) + 20, height = rows * (boxH + gapY) + 20;
  const pos = {};
  columns.forEach((col, x) => col.forEach((n, y) => {
    pos[n] = {x: 10 + x * (boxW + gapX), y: 10 + y * (boxH + gapY) + (rows - col.length) * (boxH + gapY) / 2};
  }));
  const root = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, class: "dag", id: "dsl-graph"});
  root.append(svg("defs", {}, svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto"},
    svg("path", {d: "M0,0 L10,5 L0,10 z", fill: "#8a94a6"}))));
  for (const [a, b] of edges) {
    const p = pos[a], q = pos[b];
    const x1 = p.x + boxW, y1 = p.y + boxH / 2, x2 = q.x, y2 = q.y + boxH / 2;
    root.append(svg("path", {d: `M${x1},${y1} C${x1 + gapX / 2},${y1} ${x2 - gapX / 2},${y2} ${x2},${y2}`, fill: "none", stroke: "#8a94a6", "marker-end": "url(#arrow)"}));
  }
  for (const n of names) {
    const st = statusOfComponent(n);
    const g = svg("g", {class: "node fs-" + st, "data-component": n, transform: `translate(${pos[n].x},${pos[n].y})`, tabindex: 0});
    g.append(svg("rect", {width: boxW, height: boxH, rx: 8}));
    g.append(svg("text", {x: 10, y: 19, class: "cpn-name"}, document.createTextNode(n)));
    g.append(svg("text", {x: 10, y: 36, class: "cpn-module"}, document.createTextNode(`${components[n].module || ""} · ${st}`)));
    g.addEventListener("click", () => onSelect(n));
    root.append(g);
  }
  return root;
}

function renderFateJob(view, jobId) {
  let stopped = false;
  const head = h("div", {class: "toolbar"}, h("a", {href: "#/fate", class: "ghost"}, "‹ FATE jobs"), h("h1", {}, "Job " + jobId));
  const graphBox = h("div", {class: "card graph"});
  const partiesBox = h("div", {class: "card", id: "job-parties"});
  const detail = h("div", {class: "card", id: "component-detail"}, h("p", {class: "muted"}, "choose a component in the graph"));
  view.append(head, partiesBox, graphBox, detail);
  let job = null, tasks = [], selected = null;

  function componentStatus(name) {
    const mine = tasks.filter((t) => t.f_component_name === name).map((t) => String(t.f_status || "").toLowerCase());
    if (!mine.length) return "waiting";
    return FATE_STATUS_ORDER.find((s) => mine.includes(s)) || mine[0];
  }

  async function load() {
    try {
      const rows = await api.flow("job/query", {job_id: jobId});
      job = (rows || []).find((r) => r.f_is_initiator) || (rows || [])[0];
      if (!job) { graphBox.replaceChildren(h("p", {class: "empty"}, "no such job")); return; }
      try { tasks = (await api.flow("job/task/query", {job_id: jobId})) || []; } catch (e) { tasks = []; }
      const dsl = parseMaybeJson(job.f_dsl);
      head.replaceChildren(h("a", {href: "#/fate", class: "ghost"}, "‹ FATE jobs"), h("h1", {}, "Job " + jobId),
        fateStatusBadge(job.f_status), h("span", {class: "muted"}, `${job.f_role || ""} ${job.f_party_id || ""}`),
        job.f_progress !== undefined ? progressBar({progress: job.f_progress, status: "TASK_STATUS_RUNNING"}) : null);
      partiesBox.replaceChildren(h("h2", {}, "Parties"), partiesTable(tasks),
        job.f_error ? h("p", {class: "muted", id: "job-error"}, job.f_error) : "");
      graphBox.replaceChildren(dslGraph(dsl.components || {}, componentStatus, select));
      if (selected) markSelected();
    } catch (e) { graphBox.replaceChildren(h("p", {class: "empty"}, "job: " + e.message)); }
  }

  function markSelected() {
    for (const g of graphBox.querySelectorAll("g.node")) g.classList.toggle("selected", g.dataset.component === selected);
  }

  async function select(name) {
    selected = name;
    markSelected();
    const parties = tasks.filter((t) => t.f_component_name === name);
    const initiator = {role: job.f_role, party_id: job.f_party_id};
    const choices = parties.length ? parties.map((t) => ({role: t.f_role, party_id: t.f_party_id, status: t.f_status,
      elsewhere: t.f_run_on_this_party === false})) : [initiator];
    // Another party's parameters, metrics and output stay on its own server: ask its dashboard.
    const picker = h("select", {id: "party-picker"}, choices.map((c, i) => h("option", {value: i},
      `${c.role} ${c.party_id}${c.status ? " · " + c.status : ""}${c.elsewhere ? " · on its own server" : ""}`)));
    // The initiator's view first (as FATE Board), else the first party that ran it.
    const ran = (c) => String(c.status || "").toLowerCase() !== "pass";
    let first = choices.findIndex((c) => ran(c) && c.role === initiator.role && String(c.party_id) === String(initiator.party_id));
    if (first < 0) first = Math.max(0, choices.findIndex(ran));
    picker.value = String(first);
    const body = h("div", {});
    detail.replaceChildren(h("div", {class: "toolbar"}, h("h2", {}, name), fateStatusBadge(componentStatus(name)), picker), body);
    const show = () => showComponent(body, name, choices[Number(picker.value)] || initiator);
    picker.addEventListener("change", show);
    show();
  }

  async function showComponent(body, name, party) {
    const req = {job_id: jobId, role: party.role, party_id: party.party_id, component_name: name};
    const params = h("section", {id: "component-params"}, h("h3", {}, "Parameters"));
    const metrics = h("section", {id: "component-metrics"}, h("h3", {}, "Metrics"));
    const output = h("section", {id: "component-output"}, h("h3", {}, "Output data"));
    body.replaceChildren(params, metrics, output);
    api.flow("tracking/component/parameters", req).then((p) => params.append(h("pre", {class: "json"}, JSON.stringify(p, null, 2))))
      .catch((e) => params.append(h("p", {class: "muted"}, e.message)));
    api.flow("tracking/component/metric/all", req).then((m) => drawMetrics(metrics, m || {}))
      .catch((e) => metrics.append(h("p", {class: "muted"}, e.message)));
    api.post("/v1/tracking/component/output/data", Object.assign({limit: 50}, req)).then((r) => drawOutput(output, r))
      .catch((e) => output.append(h("p", {class: "muted"}, e.message)));
  }

  load();
  const timer = setInterval(() => { if (!stopped) load(); }, 3000);
  return () => { stopped = true; clearInterval(timer); };
}

// metric/all: {namespace: {name: {data: [[x, y], ...], meta: {...}}}}. Curves become charts,
// single values a table. ROC (fpr, tpr) gets the diagonal; KS is drawn as its two curves.
function drawMetrics(box, all) {
  const charts = h("div", {class: "charts"});
  const scalars = [];
  const ks = new Map();  // namespace -> KS curves (FATE stores fpr and tpr as two metrics): one chart
  for (const [ns, metrics] of Object.entries(all)) {
    for (const [name, metric] of Object.entries(metrics || {})) {
      const data = (metric && metric.data) || [];
      const meta = (metric && metric.meta) || {};
      const type = String(meta.metric_type || "").toUpperCase();
      const numeric = data.filter((p) => Array.isArray(p) && p.length >= 2 && !isNaN(Number(p[1])));
      const xsNumeric = numeric.every((p) => !isNaN(Number(p[0])));
      if (numeric.length >= 2 && xsNumeric && type === "KS") {
        if (!ks.has(ns)) ks.set(ns, []);
        ks.get(ns).push({name, points: numeric});
      } else if (numeric.length >= 2 && xsNumeric) {
        const title = `${ns} · ${name}${type ? " (" + type + ")" : ""}`;
        const x = type === "ROC" ? "false positive rate" : type === "LOSS" ? "iteration" : (meta.unit_name || "");
        const y = type === "ROC" ? "true positive rate" : type === "LOSS" ? "loss" : (meta.curve_name || "");
        charts.append(h("figure", {class: "metric", dataset: {metric: name}},
          lineChart([{name, points: numeric}], {title, xLabel: x, yLabel: y, diagonal: type === "ROC"})));
      } else {
        for (const p of data) scalars.push([ns, name, Array.isArray(p) ? p[0] : "", Array.isArray(p) ? p[1] : JSON.stringify(p)]);
      }
    }
  }
  for (const [ns, series] of ks) {
    charts.append(h("figure", {class: "metric", dataset: {metric: "ks"}},
      lineChart(series, {title: `${ns} · KS`, xLabel: "threshold", yLabel: "rate"})));
  }
  if (!charts.children.length && !scalars.length) box.append(h("p", {class: "muted"}, "no metrics"));
  box.append(charts);
  if (scalars.length) box.append(h("table", {class: "grid compact"},
    h("thead", {}, h("tr", {}, ["namespace", "metric", "key", "value"].map((c) => h("th", {}, c)))),
    h("tbody", {}, scalars.map((r) => h("tr", {}, r.map((v) => h("td", {}, typeof v === "number" ? +v.toFixed(6) : String(v))))))));
}

// output/data: data is rows (or a list of row lists, one per output), meta.header the column names.
function drawOutput(box, answer) {
  if (answer.retcode !== 0) { box.append(h("p", {class: "muted"}, answer.retmsg || "no output data")); return; }
  let rows = answer.data || [];
  let header = (answer.meta && answer.meta.header) || [];
  const total = answer.meta && answer.meta.total;
  if (rows.length && Array.isArray(rows[0]) && rows[0].length && Array.isArray(rows[0][0])) { rows = rows[0]; header = header[0] || []; }
  if (Array.isArray(header[0])) header = header[0];
  if (!rows.length) { box.append(h("p", {class: "muted"}, "no output data")); return; }
  const shown = rows.slice(0, 50);
  box.append(h("p", {class: "muted"}, `${shown.length} of ${Array.isArray(total) ? total[0] : (total || rows.length)} rows`),
    h("div", {class: "scroll"}, h("table", {class: "grid compact", id: "output-table"},
      h("thead", {}, h("tr", {}, header.map((c) => h("th", {}, c)))),
      h("tbody", {}, shown.map((r) => h("tr", {}, (Array.isArray(r) ? r : Object.values(r)).map((v) => h("td", {}, typeof v === "object" ? JSON.stringify(v) : String(v)))))))));
}
