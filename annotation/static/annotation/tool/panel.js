// The side panel and the data-* attributes of #tool (read by the browser tests): model and
// decoding path, candidates with their predicted IoU, accepted masks, tool mode, brush size;
// the Category block is categories.js's.

import { categoryName, renderCategory, rowCategorySelect } from "./categories.js";

export function updatePanel(tool) {
  const root = tool.root;
  root.dataset.imageId = tool.image ? tool.image.id : "";
  root.dataset.decoder = tool.decoder ? tool.decoder.path : "";
  root.dataset.versionId = tool.version ? tool.version.id : "";
  root.dataset.accepted = String(tool.accepted.length);
  root.dataset.prefilled = String(tool.accepted.filter((item) => item.prefill).length);
  root.dataset.sentBack = String(tool.sentBack.length);
  if (tool.overlays.uncovered) tool.refreshCoverage();
  root.dataset.uncovered = tool.overlays.uncovered && tool.uncoveredPixels !== null ? String(tool.uncoveredPixels) : "";
  root.dataset.maskArea = String(tool.work.area);
  root.dataset.editing = tool.editingId() === null ? "" : String(tool.editingId());
  root.dataset.mode = tool.mode;
  const entry = tool.resultEntry();
  root.dataset.candidates = entry ? String(entry.result.candidates.length) : "0";
  root.dataset.selected = entry ? String(entry.selected) : "";
  root.dataset.pending = String(tool.work.prompts.filter((p) => !p.result).length);
  tool.$("#model-name").textContent = tool.version
    ? `${tool.version.name || "version " + tool.version.id} (${tool.version.arch})`
    : "none";
  const badge = tool.$("#decoder-path");
  badge.dataset.path = tool.decoder ? tool.decoder.path : "";
  badge.textContent = tool.decoder
    ? tool.decoder.path === "browser"
      ? `in the browser (WebAssembly, ${tool.decoder.threads} thread${tool.decoder.threads > 1 ? "s" : ""})`
      : "on the server"
    : "not ready";
  badge.title = tool.decoderNote;
  tool.$("#decoder-note").textContent = tool.decoderNote;
  tool.$("#status-image").textContent = tool.image
    ? `${tool.image.file_name || "image " + tool.image.id} · ${tool.image.width}×${tool.image.height}`
    : "";
  tool.$("#status-zoom").textContent = `${Math.round(tool.view.scale * 100)}%`;
  renderCandidates(tool, entry);
  renderCategory(tool);
  renderAcceptedList(tool);
  renderSentBack(tool);
  for (const button of root.querySelectorAll("[data-mode-button]")) {
    button.setAttribute("aria-pressed", String(button.dataset.modeButton === tool.mode));
  }
  tool.$("#brush-size").value = String(tool.brushSize);
  tool.$("#brush-size-value").textContent = `${tool.brushSize} px`;
}

function renderCandidates(tool, entry) {
  const list = tool.$("#candidates");
  list.replaceChildren();
  if (!entry) {
    list.innerHTML = '<li class="muted small">Click the object to get masks.</li>';
    return;
  }
  entry.result.candidates.forEach((candidate, index) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "candidate";
    button.dataset.index = String(index);
    button.setAttribute("aria-pressed", String(index === entry.selected));
    button.textContent = `${index + 1} · IoU ${candidate.score.toFixed(3)}`;
    button.addEventListener("click", () => tool.selectCandidate(index));
    item.append(button);
    list.append(item);
  });
}

/** A row of a mask list: its colour swatch and a label; framed while it is in the editor. */
function maskRow(tool, item, text) {
  const row = document.createElement("li");
  row.dataset.maskId = String(item.id);
  row.classList.toggle("editing", item.id === tool.editingId());
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = `rgb(${item.color.join(",")})`;
  const label = document.createElement("span");
  label.textContent = text;
  row.append(swatch, label);
  return row;
}

/** The button that opens the mask in the editor (none where the user may not edit it). */
function editButton(tool, item, [idle, busy], title) {
  if (!tool.mayEdit(item)) return [];
  const button = document.createElement("button");
  button.type = "button";
  button.className = "button button-quiet small edit-mask";
  button.textContent = item.id === tool.editingId() ? busy : idle;
  button.disabled = item.id === tool.editingId();
  button.title = title;
  button.addEventListener("click", () => tool.startEdit(item.id));
  return [button];
}

/** Masks a reviewer rejected, with the reason and a Fix button (opens them in the editor). */
function renderSentBack(tool) {
  tool.$("#sent-back-block").hidden = tool.sentBack.length === 0;
  tool.$("#sent-back-count").textContent = String(tool.sentBack.length);
  const rows = tool.sentBack.map((item) => {
    const row = maskRow(tool, item, `#${item.id} · “${item.reason}”`);
    row.title = item.reason;
    row.append(...editButton(tool, item, ["Fix", "Fixing"], "Fix this mask and send it back to review"));
    return row;
  });
  tool.$("#sent-back-list").replaceChildren(...rows);
}

function renderAcceptedList(tool) {
  const list = tool.$("#accepted-list");
  list.replaceChildren();
  const prefilled = tool.accepted.filter((item) => item.prefill).length;
  tool.$("#accepted-count").textContent = prefilled
    ? `${tool.accepted.length} (${prefilled} prefilled)`
    : String(tool.accepted.length);
  for (const item of tool.accepted) {
    const parts = [`#${item.id}`, categoryName(tool, item.category), item.prefill ? "prefilled" : item.source, `${item.area} px`];
    const row = maskRow(tool, item, parts.filter(Boolean).join(" · "));
    row.classList.toggle("hovered", item.id === tool.hoveredId);
    row.classList.toggle("prefill", item.prefill);
    if (item.prefill) row.dataset.prefill = "proposed";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = `button button-quiet small ${item.prefill ? "reject-prefill" : "delete-mask"}`;
    remove.textContent = item.prefill ? "Reject" : "Delete";
    remove.title = item.prefill ? "Reject this prefilled mask (R)" : "Delete this mask";
    remove.addEventListener("click", () => tool.deleteAccepted(item.id));
    row.addEventListener("mouseenter", () => tool.hover(item.id));
    row.addEventListener("mouseleave", () => tool.hover(null));
    row.append(...rowCategorySelect(tool, item), ...editButton(tool, item, ["Edit", "Editing"], "Open this mask in the editor (M)"), remove);
    list.append(row);
  }
}
