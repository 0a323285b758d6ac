// maskloop stats charts: small line and bar charts drawn as inline SVG. No dependencies.
//
// Markup: <figure data-chart data-source="ID" data-field="seconds_per_mask" data-kind="line"
// data-label="s/mask"> where ID names a json_script element holding {"per_day": [{"date":
// "YYYY-MM-DD", <field>: number|null, ...}]}. A null value is a day without data: the line
// breaks there instead of pretending it was zero.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 220;
const PAD = { top: 14, right: 14, bottom: 34, left: 48 };

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// Round numbers for the y axis: 0 .. a "nice" maximum in 4-5 steps of 1, 2, 2.5 or 5 x 10^k.
export function niceTicks(maximum) {
  if (!(maximum > 0)) return [0, 1];
  const rough = maximum / 4;
  const magnitude = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= rough);
  const ticks = [];
  for (let value = 0; value < maximum + step * 0.999; value += step) ticks.push(Number(value.toPrecision(12)));
  return ticks;
}

export function formatNumber(value) {
  if (value === null || value === undefined) return "—";
  if (Math.abs(value) >= 100 || Number.isInteger(value)) return String(Math.round(value));
  // At most 1 decimal from 10 up, 2 below; no trailing zeros ("1.5", not "1.50").
  return String(Number(value.toFixed(Math.abs(value) >= 10 ? 1 : 2)));
}

function shortDate(iso) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(iso)) return iso; // a category label (e.g. a round), as is
  const [, month, day] = iso.split("-");
  return `${Number(day)}.${Number(month)}.`;
}

// Draw one series into a new <svg>; rows = [{date, value}] in date order.
export function drawChart(rows, { kind = "line", label = "" } = {}) {
  const svg = svgElement("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": `${label} per day`,
  });
  const values = rows.map((row) => row.value).filter((v) => v !== null && v !== undefined);
  if (values.length === 0) {
    svg.appendChild(svgElement("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, "no data in this period"));
    return svg;
  }
  const ticks = niceTicks(Math.max(...values));
  const top = ticks[ticks.length - 1];
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(rows.length, 1);
  const x = (i) => PAD.left + slot * (i + 0.5);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  for (const tick of ticks) {
    svg.appendChild(svgElement("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick), class: "chart-grid" }));
    svg.appendChild(svgElement("text", { x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "chart-tick" }, formatNumber(tick)));
  }
  // At most ~8 date labels, always including the last day.
  const every = Math.max(1, Math.ceil(rows.length / 8));
  rows.forEach((row, i) => {
    if ((rows.length - 1 - i) % every === 0) {
      svg.appendChild(svgElement("text", { x: x(i), y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle", class: "chart-tick" }, shortDate(row.date)));
    }
  });

  if (kind === "bar") {
    const barW = Math.max(2, slot * 0.7);
    rows.forEach((row, i) => {
      if (row.value === null || row.value === undefined) return;
      const bar = svgElement("rect", { x: x(i) - barW / 2, y: y(row.value), width: barW, height: PAD.top + plotH - y(row.value), class: "chart-bar", "data-date": row.date });
      bar.appendChild(svgElement("title", {}, `${row.date}: ${formatNumber(row.value)} ${label}`));
      svg.appendChild(bar);
    });
    return svg;
  }

  // Line: one path whose segments break at missing days.
  let d = "";
  let penDown = false;
  rows.forEach((row, i) => {
    if (row.value === null || row.value === undefined) {
      penDown = false;
      return;
    }
    d += `${penDown ? "L" : "M"}${x(i).toFixed(1)},${y(row.value).toFixed(1)}`;
    penDown = true;
  });
  svg.appendChild(svgElement("path", { d, class: "chart-line" }));
  rows.forEach((row, i) => {
    if (row.value === null || row.value === undefined) return;
    const dot = svgElement("circle", { cx: x(i), cy: y(row.value), r: 3.2, class: "chart-dot", "data-date": row.date });
    dot.appendChild(svgElement("title", {}, `${row.date}: ${formatNumber(row.value)} ${label}`));
    svg.appendChild(dot);
  });
  return svg;
}

function readSource(id) {
  const holder = document.getElementById(id);
  if (!holder) return null;
  try {
    return JSON.parse(holder.textContent);
  } catch (error) {
    return null;
  }
}

export function renderCharts(root = document) {
  root.querySelectorAll("figure[data-chart]").forEach((figure) => {
    const data = readSource(figure.dataset.source);
    // data-series / data-x name another list and its label key (default: per_day by date).
    const series = data && data[figure.dataset.series || "per_day"];
    if (!Array.isArray(series)) return;
    const field = figure.dataset.field;
    const x = figure.dataset.x || "date";
    const rows = series.map((day) => ({ date: String(day[x]), value: day[field] ?? null }));
    figure.querySelector("svg.chart")?.remove();
    const chart = drawChart(rows, { kind: figure.dataset.kind || "line", label: figure.dataset.label || field });
    const caption = figure.querySelector("figcaption");
    if (caption) caption.after(chart);
    else figure.prepend(chart);
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => renderCharts());
else renderCharts();
