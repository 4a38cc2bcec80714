// Renders /openapi.json: operations grouped by tag, each with its parameters and schemas.
"use strict";

(async function () {
  const root = document.getElementById("api");
  let doc;
  try { doc = await api.get("/openapi.json"); } catch (e) { root.replaceChildren(h("p", {class: "empty"}, "openapi.json: " + e.message)); return; }
  const schemas = (doc.components && doc.components.schemas) || {};

  function schemaText(s, depth) {
    if (!s) return "";
    if (s.$ref) {
      const name = s.$ref.split("/").pop();
      const target = schemas[name] || {};
      if (depth > 0 || !target.properties) return target.enum ? `${name} (${target.enum.join(" | ")})` : name;
      return name + " " + schemaText(target, depth + 1);
    }
    if (s.allOf) return schemaText(s.allOf[0], depth);
    if (s.type === "array") return schemaText(s.items, depth + 1) + "[]";
    if (s.type === "object" && s.properties) {
      const inner = Object.entries(s.properties).map(([k, v]) => `  ${k}: ${schemaText(v, depth + 1)}`);
      return "{\n" + inner.join("\n") + "\n}";
    }
    if (s.type === "object" && s.additionalProperties) return "map<string, " + schemaText(s.additionalProperties, depth + 1) + ">";
    return s.type + (s.format ? ` (${s.format})` : "");
  }

  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [verb, op] of Object.entries(ops)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([verb, path, op]);
    }
  }
  const tagNotes = Object.fromEntries((doc.tags || []).map((t) => [t.name, t.description]));
  const out = [h("div", {class: "toolbar"}, h("h1", {}, doc.info.title), h("span", {class: "muted"}, doc.info.description))];
  for (const [tag, ops] of byTag) {
    if (!ops.length) continue;
    out.push(h("section", {class: "card", dataset: {tag}}, h("h2", {}, tag), tagNotes[tag] ? h("p", {class: "muted"}, tagNotes[tag]) : null,
      ops.map(([verb, path, op]) => {
        const params = op.parameters || [];
        const body = op.requestBody && Object.values(op.requestBody.content)[0].schema;
        const ok = op.responses && (op.responses["200"] || op.responses["201"]);
        const answer = ok && ok.content && Object.values(ok.content)[0].schema;
        return h("details", {class: "op", dataset: {operation: op.operationId}},
          h("summary", {}, h("span", {class: "badge verb-" + verb}, verb.toUpperCase()), " ", h("code", {}, path), " ",
            h("span", {class: "muted"}, op.summary || ""), op["x-server-streaming"] ? h("span", {class: "badge st-running"}, "stream") : null),
          op.description ? h("p", {}, op.description) : null,
          params.length ? h("table", {class: "grid compact"}, h("thead", {}, h("tr", {}, ["parameter", "in", "type", ""].map((c) => h("th", {}, c)))),
            h("tbody", {}, params.map((p) => h("tr", {}, h("td", {}, h("code", {}, p.name)), h("td", {}, p.in),
              h("td", {}, schemaText(p.schema, 1)), h("td", {class: "muted"}, p.description || ""))))) : null,
          body ? [h("h3", {}, "request body"), h("pre", {class: "json"}, schemaText(body, 0))] : null,
          answer ? [h("h3", {}, ok.description.startsWith("A stream") ? "stream of" : "response"), h("pre", {class: "json"}, schemaText(answer, 0))] : null);
      })));
  }
  root.replaceChildren(...out);
})();
