// maskloop rounds page: polls the rounds API while a round is queued or running, updates the
// table in place and draws the selected round's loss curve as inline SVG. No dependencies.
"use strict";

import { formatNumber, niceTicks } from "../annotation/charts.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 220;
const PAD = { top: 14, right: 14, bottom: 30, left: 52 };
const POLL_MS = 2000;
const ACTIVE = new Set(["queued", "running"]);
// The server's labels of Job.Status (the template renders them; the API gives the values).
const STATUS_LABEL = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" };

const table = document.getElementById("rounds-table");
const figure = document.getElementById("loss-curve");
const title = document.getElementById("curve-title");
const live = document.getElementById("rounds-live");
let selected = null; // round number whose curve is shown

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// points: [[step, loss], ...] in step order.
export function drawCurve(points) {
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": "loss per step" });
  if (!points || points.length === 0) {
    chart.appendChild(svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, "no training steps yet"));
    return chart;
  }
  const ticks = niceTicks(Math.max(...points.map((p) => p[1])));
  const top = ticks[ticks.length - 1];
  const lastStep = Math.max(1, points[points.length - 1][0]);
  const x = (step) => PAD.left + (step / lastStep) * (WIDTH - PAD.left - PAD.right);
  const y = (value) => HEIGHT - PAD.bottom - (value / top) * (HEIGHT - PAD.top - PAD.bottom);
  for (const tick of ticks) {
    chart.appendChild(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick), class: "chart-grid" }));
    chart.appendChild(svg("text", { x: PAD.left - 6, y: y(tick) + 4, "text-anchor": "end", class: "chart-tick" }, formatNumber(tick)));
  }
  chart.appendChild(svg("text", { x: PAD.left, y: HEIGHT - 8, class: "chart-tick" }, "step 0"));
  chart.appendChild(svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 8, "text-anchor": "end", class: "chart-tick" }, `step ${lastStep}`));
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  chart.appendChild(svg("path", { d: path, class: "chart-line", fill: "none" }));
  return chart;
}

function metric(metrics, key) {
  return metrics && metrics[key] !== undefined ? formatNumber(metrics[key]) : "—";
}

function updateRow(round) {
  const row = table.querySelector(`tr[data-round="${round.number}"]`);
  if (!row) return false;
  row.dataset.status = round.status;
  const badge = row.querySelector('[data-cell="status"] .badge');
  badge.className = `badge badge-${round.status}`;
  badge.textContent = STATUS_LABEL[round.status] || round.status;
  const bar = row.querySelector("progress");
  bar.max = round.total_steps || 1;
  bar.value = round.step;
  row.querySelector('[data-cell="message"]').textContent = round.error || round.message;
  const parent = round.parent_metrics;
  row.querySelector('[data-cell="miou"]').textContent = `${metric(parent, "miou@1")} → ${metric(round.validation, "miou@1")}`;
  row.querySelector('[data-cell="clicks"]').textContent = `${metric(parent, "clicks_to_0.9")} → ${metric(round.validation, "clicks_to_0.9")}`;
  row.querySelector('[data-cell="version"]').textContent = round.produced_version ? `#${round.produced_version}` : "";
  if (!ACTIVE.has(round.status)) row.querySelector("[data-cancel]")?.closest("form")?.remove();
  return true;
}

async function showCurve(number) {
  selected = number;
  const response = await fetch(`${figure.dataset.apiBase}${number}/`, { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const round = await response.json();
  if (number !== selected) return; // another round was picked while this one loaded
  figure.querySelector("svg.chart")?.remove();
  document.getElementById("curve-empty")?.remove();
  figure.prepend(drawCurve(round.loss_curve));
  title.textContent = `round ${round.number} · ${round.status}`;
}

// The last round finished while the page was open: the launch form (rendered disabled) opens.
function reopenLaunch() {
  document.getElementById("active-round")?.remove();
  const launch = document.querySelector("#launch-form button[type=submit]");
  if (launch) launch.disabled = false;
}

async function poll() {
  let rounds;
  try {
    const response = await fetch(table.dataset.api, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    rounds = await response.json();
  } catch (error) {
    live.textContent = `update failed (${error.message}); retrying`;
    setTimeout(poll, POLL_MS * 3);
    return;
  }
  // A round this page has no row for (launched elsewhere): reload to get its row and forms.
  if (rounds.some((round) => !updateRow(round))) { window.location.reload(); return; }
  if (selected === null && rounds.length) selected = rounds[0].number;
  if (selected !== null) await showCurve(selected);
  const running = rounds.some((round) => ACTIVE.has(round.status));
  live.textContent = running ? "updating live" : "";
  if (running) setTimeout(poll, POLL_MS);
  else reopenLaunch();
}

table.addEventListener("click", (event) => {
  const button = event.target.closest("[data-show-curve]");
  if (button) showCurve(Number(button.dataset.showCurve));
});
poll();
