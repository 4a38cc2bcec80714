// Small SVG charts: sparklines (node usage) and line charts (FATE metrics, ROC/KS curves).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) if (c) el.append(c);
  return el;
}

// values: numbers 0..max; the newest on the right.
function sparkline(values, {width = 120, height = 28, max = 100, color = "#4a7bd0"} = {}) {
  const root = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, class: "spark"});
  root.append(svg("rect", {x: 0, y: 0, width, height, fill: "#f4f6fa"}));
  if (values.length === 1) values = [values[0], values[0]];  // one sample so far: a flat line
  if (values.length > 1) {
    const step = width / (values.length - 1);
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (Math.min(v, max) / max) * (height - 2)).toFixed(1)}`);
    root.append(svg("polygon", {points: `0,${height} ${pts.join(" ")} ${width},${height}`, fill: color, "fill-opacity": "0.18"}));
    root.append(svg("polyline", {points: pts.join(" "), fill: "none", stroke: color, "stroke-width": "1.5"}));
  }
  return root;
}

// series: [{name, points: [[x, y], ...]}]; draws axes with min/max labels.
function lineChart(series, {width = 360, height = 220, title = "", xLabel = "", yLabel = "", diagonal = false} = {}) {
  const pad = {l: 44, r: 10, t: title ? 22 : 8, b: 30};
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => Number(p[0])), ys = all.map((p) => Number(p[1]));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const W = width - pad.l - pad.r, H = height - pad.t - pad.b;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * W;
  const Y = (y) => pad.t + H - ((y - y0) / (y1 - y0)) * H;
  const root = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, class: "chart"});
  if (title) root.append(svg("text", {x: width / 2, y: 15, "text-anchor": "middle", class: "chart-title"}, document.createTextNode(title)));
  root.append(svg("rect", {x: pad.l, y: pad.t, width: W, height: H, fill: "#fafbfd", stroke: "#d5dbe5"}));
  const label = (x, y, text, anchor) => svg("text", {x, y, "text-anchor": anchor, class: "chart-axis"}, document.createTextNode(text));
  const fmt = (v) => Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(+v.toFixed(3));
  root.append(label(pad.l, height - 14, fmt(x0), "start"), label(pad.l + W, height - 14, fmt(x1), "end"),
              label(pad.l - 4, pad.t + H, fmt(y0), "end"), label(pad.l - 4, pad.t + 10, fmt(y1), "end"));
  if (xLabel) root.append(label(pad.l + W / 2, height - 3, xLabel, "middle"));
  if (yLabel) root.append(svg("text", {x: 10, y: pad.t + H / 2, "text-anchor": "middle", class: "chart-axis",
                                        transform: `rotate(-90 10 ${pad.t + H / 2})`}, document.createTextNode(yLabel)));
  if (diagonal) root.append(svg("line", {x1: X(x0), y1: Y(y0), x2: X(x1), y2: Y(y1), stroke: "#bbb", "stroke-dasharray": "4 3"}));
  const palette = ["#4a7bd0", "#d0643a", "#3aa55d", "#9b59b6", "#c9a227"];
  series.forEach((s, i) => {
    const pts = s.points.map((p) => `${X(Number(p[0])).toFixed(1)},${Y(Number(p[1])).toFixed(1)}`).join(" ");
    root.append(svg("polyline", {points: pts, fill: "none", stroke: palette[i % palette.length], "stroke-width": "1.8"}));
    if (series.length > 1) root.append(svg("text", {x: pad.l + 6, y: pad.t + 14 + 13 * i, fill: palette[i % palette.length], class: "chart-axis"},
                                          document.createTextNode(s.name)));
  });
  return root;
}
