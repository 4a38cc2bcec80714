// The router: #/tasks, #/tasks/ID, #/groups, #/nodes, #/fate, #/fate/JOB_ID.
"use strict";

window.taskhubUI = window.taskhubUI || {};

const NS_KEY = "taskhub.namespace";

function currentNamespace() {
  return document.getElementById("namespace").value.trim() || "*";
}

const ROUTES = [
  [/^#\/tasks\/(\d+)$/, (view, m) => renderTask(view, m[1]), "tasks"],
  [/^#\/tasks$/, (view) => renderTasks(view), "tasks"],
  [/^#\/groups$/, (view) => renderGroups(view), "groups"],
  [/^#\/nodes$/, (view) => renderNodes(view), "nodes"],
  [/^#\/fate\/(.+)$/, (view, m) => renderFateJob(view, decodeURIComponent(m[1])), "fate"],
  [/^#\/fate$/, (view) => renderFateJobs(view), "fate"],
];

let cleanup = null;

function route() {
  const hash = location.hash || "#/tasks";
  const found = ROUTES.find(([re]) => re.test(hash));
  if (!found) { location.hash = "#/tasks"; return; }
  if (cleanup) cleanup();
  const view = document.getElementById("view");
  view.replaceChildren();
  const [re, render, nav] = found;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
  cleanup = render(view, hash.match(re)) || null;
}

function main() {
  const ns = document.getElementById("namespace");
  ns.value = localStorage.getItem(NS_KEY) || "*";
  ns.addEventListener("change", () => { localStorage.setItem(NS_KEY, currentNamespace()); route(); });
  document.getElementById("token-button").addEventListener("click", () => askToken().then((given) => {
    document.body.classList.remove("read-only");  // a new token may do more
    if (given) route();
  }));
  window.addEventListener("hashchange", route);
  route();
}

main();
