// Task groups (templates, instances and their tasks' states) and nodes (state, drain, slots, usage history).
"use strict";

// ----------------------------------------------------------------------- task groups
function renderGroups(view) {
  let stopped = false;
  const templates = h("tbody", {id: "template-rows"});
  const instances = h("div", {id: "instances"});
  const editor = h("textarea", {rows: 7, cols: 60, id: "template-json",
    placeholder: '{"name": "demo", "task_groups": [{"tasks": [{"name": "a", "config": {"command": "echo hi"}}]}]}'});
  view.append(
    h("section", {class: "toolbar"}, h("h1", {}, "Task groups")),
    h("div", {class: "split"},
      h("section", {class: "card"}, h("h2", {}, "Templates"),
        h("table", {class: "grid"}, h("thead", {}, h("tr", {}, ["name", "groups", "tasks", "created", ""].map((c) => h("th", {}, c)))), templates),
        h("details", {}, h("summary", {}, "new template"), editor, h("br"),
          h("button", {onclick: async () => {
            try { await api.post("/v1/taskgroups/templates", {json: editor.value}); editor.value = ""; load(); toast("template stored", "ok"); }
            catch (e) { toast("template: " + e.message); }
          }}, "Store template"))),
      h("section", {class: "card"}, h("h2", {}, "Instances"), instances)));

  async function load() {
    try {
      const [t, i] = await Promise.all([api.get("/v1/taskgroups/templates"), api.get("/v1/taskgroups/instances")]);
      templates.replaceChildren(...(t.templates || []).map((tpl) => h("tr", {},
        h("td", {}, tpl.name), h("td", {}, (tpl.task_groups || []).length),
        h("td", {}, (tpl.task_groups || []).reduce((n, g) => n + (g.tasks || []).length, 0)),
        h("td", {class: "muted"}, fmtTime(tpl.create_time_ms)),
        h("td", {class: "actions"},
          h("button", {class: "small", onclick: async () => {
            try { const inst = await api.post("/v1/taskgroups/instances", {name: tpl.name, namespace: currentNamespace() === "*" ? "" : currentNamespace()}); toast(`deployed ${inst.id}`, "ok"); load(); }
            catch (e) { toast("deploy: " + e.message); }
          }}, "deploy"),
          h("button", {class: "small danger", onclick: async () => {
            if (!await confirmAction(`Delete template ${tpl.name}? Its instances keep running.`)) return;
            try { await api.del(`/v1/taskgroups/templates/${encodeURIComponent(tpl.name)}`); load(); } catch (e) { toast("delete: " + e.message); }
          }}, "delete")))));
      if (!(t.templates || []).length) templates.append(h("tr", {}, h("td", {colspan: 5, class: "empty"}, "no templates")));
      const list = (i.instances || []).slice(0, 50);
      const cards = await Promise.all(list.map(instanceCard));
      instances.replaceChildren(...cards);
      if (!list.length) instances.append(h("p", {class: "empty"}, "no instances"));
    } catch (e) { toast("task groups: " + e.message); }
  }

  async function instanceCard(inst) {
    const tasks = await Promise.all((inst.task_ids || []).slice(0, 100).map((id) =>
      api.get(`/v1/tasks/${id}?namespace=*`).catch(() => ({id, spec: {name: "?"}, status: "TASK_STATUS_UNKNOWN"}))));
    const st = String(inst.status).replace("INSTANCE_STATUS_", "");
    return h("div", {class: "instance"},
      h("div", {class: "toolbar"}, h("b", {}, inst.template), h("code", {class: "muted"}, inst.id), statusBadge(st),
        h("span", {class: "muted"}, fmtTime(inst.create_time_ms)), h("span", {class: "spacer"}),
        st === "RUNNING" ? h("button", {class: "small danger", onclick: async () => {
          if (!await confirmAction(`Stop instance ${inst.id}? Its unfinished tasks are cancelled.`)) return;
          try { await api.post(`/v1/taskgroups/instances/${inst.id}:stop`, {}); load(); } catch (e) { toast("stop: " + e.message); }
        }}, "stop") : null),
      h("div", {class: "chips"}, tasks.map((t) => h("a", {href: `#/tasks/${t.id}`, class: "chip st-" + statusOf(t).toLowerCase(),
        title: `${t.spec.name}: ${statusOf(t).toLowerCase()}`}, t.spec.name || t.id))));
  }

  load();
  const timer = setInterval(() => { if (!stopped) load(); }, 5000);
  return () => { stopped = true; clearInterval(timer); };
}

// ----------------------------------------------------------------------- nodes
function renderNodes(view) {
  const tbody = h("tbody", {id: "node-rows"});
  view.append(h("section", {class: "toolbar"}, h("h1", {}, "Nodes"), h("span", {class: "muted"}, "cpu and memory over the last minutes (each heartbeat)")),
    h("table", {class: "grid"}, h("thead", {}, h("tr", {}, ["name", "address", "state", "slots", "labels", "cpu", "memory", "last heartbeat", ""].map((c) => h("th", {}, c)))), tbody));

  async function load() {
    try {
      const r = await api.get("/v1/nodes");
      tbody.replaceChildren(...(r.nodes || []).map((n) => {
        const samples = n.usage_history || [];
        const hist = {cpu: samples.map((u) => Number(u.cpu_percent) || 0), mem: samples.map((u) => Number(u.memory_percent) || 0)};
        if (!samples.length) { hist.cpu.push(Number(n.cpu_percent) || 0); hist.mem.push(Number(n.memory_percent) || 0); }
        const online = n.state === "NODE_STATE_ONLINE";
        const used = n.slots - n.free_slots;
        return h("tr", {dataset: {node: n.name}},
          h("td", {}, h("b", {}, n.name), n.local ? h("span", {class: "muted"}, " (local)") : null),
          h("td", {}, n.address),
          h("td", {}, statusBadge(online ? (n.draining ? "DRAINING" : "ONLINE") : "OFFLINE")),
          h("td", {}, h("div", {class: "progress", title: `${used} of ${n.slots} slots taken`},
            h("div", {class: "bar st-running", style: `width:${n.slots ? (100 * used / n.slots) : 0}%`}), h("span", {}, `${used}/${n.slots}`))),
          h("td", {}, Object.entries(n.labels || {}).map(([k, v]) => h("code", {class: "label"}, `${k}=${v}`))),
          h("td", {}, sparkline(hist.cpu), h("span", {class: "num"}, `${(+n.cpu_percent).toFixed(0)}%`)),
          h("td", {}, sparkline(hist.mem, {color: "#3aa55d"}), h("span", {class: "num"}, `${(+n.memory_percent).toFixed(0)}%`)),
          h("td", {class: "muted"}, fmtTime(n.last_heartbeat_ms)),
          h("td", {}, h("button", {class: "small", onclick: async () => {
            const resume = n.draining;
            if (!await confirmAction(resume ? `Let ${n.name} take new tasks again?` : `Drain ${n.name}? Running tasks finish; no new ones are placed there.`)) return;
            try { await api.post(`/v1/nodes/${encodeURIComponent(n.name)}:drain`, {resume}); load(); } catch (e) { toast("drain: " + e.message); }
          }}, n.draining ? "resume" : "drain")));
      }));
    } catch (e) { toast("nodes: " + e.message); }
  }
  load();
  const timer = setInterval(load, 2000);
  return () => clearInterval(timer);
}
