// maskloop review queue: masks drawn over the image, approve / reject with a reason / fix with a
// brush and eraser. Talks to the REST API (session auth + CSRF header). No dependencies.
import { shortcutKey, typesText } from "./keys.js";
import { MaskLayer } from "./mask-layer.js";
import { fixMethods, post } from "./review-fix.js";

const PALETTE = [
  [239, 68, 68], [59, 130, 246], [16, 185, 129], [245, 158, 11], [168, 85, 247],
  [236, 72, 153], [20, 184, 166], [132, 204, 22], [249, 115, 22], [99, 102, 241],
];
const ALPHA_IDLE = 0.4;
const ALPHA_FOCUS = 0.7;

// --- the page ------------------------------------------------------------------------------------

class ReviewPage {
  constructor(data) {
    this.images = new Map(data.images.map((image) => [image.id, image]));
    this.canvas = document.getElementById("review-canvas");
    this.context = this.canvas.getContext("2d");
    this.status = document.getElementById("review-stage-status");
    this.fixBar = document.getElementById("fix-toolbar");
    this.current = null; // {entry, picture, layers: Map}
    this.focusId = null;
    this.hoverId = null;
    this.fix = null; // {layer, tool, radius, last, drawing}
    this.cursor = null;
    this.loadToken = 0;
    this.lastVerdict = null; // {imageId, maskIds, text}: what Undo (Ctrl+Z) takes back
  }

  start() {
    document.querySelectorAll("[data-select-image]").forEach((button) => {
      button.addEventListener("click", () => this.select(Number(button.dataset.selectImage)));
    });
    document.querySelectorAll(".mask-row").forEach((row) => this.wireRow(row));
    document.getElementById("review-undo").addEventListener("click", () => this.undo());
    document.querySelectorAll("[data-action=approve-all]").forEach((button) => {
      button.addEventListener("click", () => this.approveAll());
    });
    this.wireFixBar();
    this.wireCanvas();
    document.addEventListener("keydown", (event) => this.onKey(event));
    window.addEventListener("resize", () => { if (this.current) this.fitCanvas(); });
    const first = document.querySelector("[data-select-image]");
    if (first) this.select(Number(first.dataset.selectImage));
  }

  article(imageId) {
    return document.querySelector(`.review-image[data-image-id="${imageId}"]`);
  }

  row(maskId) {
    return document.querySelector(`.mask-row[data-mask-id="${maskId}"]`);
  }

  async select(imageId) {
    if (this.fix) this.endFix();
    const entry = this.images.get(imageId);
    if (!entry) return;
    document.querySelectorAll(".review-image").forEach((a) => { a.hidden = Number(a.dataset.imageId) !== imageId; });
    document.querySelectorAll("[data-select-image]").forEach((b) => {
      b.classList.toggle("is-current", Number(b.dataset.selectImage) === imageId);
      b.setAttribute("aria-current", Number(b.dataset.selectImage) === imageId ? "true" : "false");
    });
    const token = ++this.loadToken;
    this.setStatus("Loading image…");
    this.canvas.dataset.ready = "0";
    const picture = new Image();
    picture.decoding = "async";
    picture.src = entry.display_url;
    try {
      await picture.decode();
    } catch (error) {
      if (token === this.loadToken) this.setStatus("The image could not be loaded.");
      return;
    }
    if (token !== this.loadToken) return;
    this.canvas.width = entry.width;
    this.canvas.height = entry.height;
    this.fitCanvas();
    const layers = new Map();
    entry.masks.forEach((mask, index) => {
      const colour = mask.color || PALETTE[index % PALETTE.length]; // a category's colour first
      try {
        layers.set(mask.id, new MaskLayer(mask, entry.width, entry.height, colour));
      } catch (error) {
        this.showError(mask.id, `This mask cannot be drawn (${error.message}); reject it.`);
        return;
      }
      const swatch = this.row(mask.id)?.querySelector("[data-swatch]");
      if (swatch) swatch.style.background = `rgb(${colour.join(", ")})`;
    });
    this.current = { entry, picture, layers };
    this.focusId = entry.masks.length ? entry.masks[0].id : null;
    this.markFocus();
    this.setStatus("");
    this.draw();
    this.canvas.dataset.ready = "1";
    this.canvas.dataset.imageId = String(imageId);
  }

  // Show the whole image as large as the stage allows (up to 75% of the window's height),
  // keeping its aspect ratio; drawing stays in the image's own pixels.
  fitCanvas() {
    const stage = this.canvas.parentElement;
    const maxWidth = stage.clientWidth;
    const maxHeight = Math.max(200, window.innerHeight * 0.75);
    const scale = Math.min(maxWidth / this.canvas.width, maxHeight / this.canvas.height);
    this.canvas.style.width = `${Math.floor(this.canvas.width * scale)}px`;
    this.canvas.style.height = `${Math.floor(this.canvas.height * scale)}px`;
  }

  setStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  draw() {
    if (!this.current) return;
    const { picture, layers } = this.current;
    const ctx = this.context;
    ctx.globalAlpha = 1;
    ctx.drawImage(picture, 0, 0, this.canvas.width, this.canvas.height);
    const highlighted = this.fix ? this.fix.layer.id : this.hoverId ?? this.focusId;
    for (const layer of layers.values()) {
      if (this.fix && layer.id !== this.fix.layer.id) continue;
      ctx.globalAlpha = layer.id === highlighted ? ALPHA_FOCUS : ALPHA_IDLE;
      ctx.drawImage(layer.canvas, 0, 0);
    }
    ctx.globalAlpha = 1;
    if (this.fix && this.cursor) {
      ctx.beginPath();
      ctx.arc(this.cursor.x, this.cursor.y, this.fix.radius, 0, 2 * Math.PI);
      ctx.lineWidth = Math.max(1, this.canvas.width / this.canvas.clientWidth);
      ctx.strokeStyle = this.fix.tool === "eraser" ? "#ffffff" : "#111827";
      ctx.stroke();
    }
    this.canvas.dataset.masksDrawn = String(this.fix ? 1 : layers.size);
  }

  markFocus() {
    document.querySelectorAll(".mask-row").forEach((row) => {
      row.classList.toggle("is-focus", Number(row.dataset.maskId) === this.focusId);
    });
  }

  // --- rows: approve / reject / fix -----------------------------------------------------------

  wireRow(row) {
    const maskId = Number(row.dataset.maskId);
    row.addEventListener("mouseenter", () => { this.hoverId = maskId; this.draw(); });
    row.addEventListener("mouseleave", () => { this.hoverId = null; this.draw(); });
    row.addEventListener("click", (event) => {
      if (event.target.closest("button, textarea, form")) return;
      this.focusId = maskId;
      this.markFocus();
      this.draw();
    });
    row.querySelector("[data-action=approve]").addEventListener("click", () => this.approve(maskId));
    row.querySelector("[data-action=reject]").addEventListener("click", () => this.openReject(maskId));
    row.querySelector("[data-action=fix]").addEventListener("click", () => this.beginFix(maskId));
    const form = row.querySelector(".reject-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.reject(maskId, form.elements.reason.value);
    });
    form.querySelector("[data-action=cancel-reject]").addEventListener("click", () => { form.hidden = true; });
  }

  showError(maskId, text) {
    const box = this.row(maskId)?.querySelector(".row-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  setBusy(maskId, busy) {
    this.row(maskId)?.querySelectorAll("button").forEach((b) => { b.disabled = busy; });
  }

  async approve(maskId) {
    this.setBusy(maskId, true);
    const result = await post(`/api/masks/${maskId}/approve/`);
    this.settle(maskId, result, "approved");
  }

  /** Approve every mask of the current image still listed (those the reviewer sees) at once. */
  async approveAll() {
    if (!this.current || this.fix) return;
    const { entry } = this.current;
    const ids = entry.masks.map((mask) => mask.id);
    if (!ids.length) return;
    const button = this.article(entry.id)?.querySelector("[data-action=approve-all]");
    if (button) button.disabled = true;
    ids.forEach((id) => this.setBusy(id, true));
    const result = await post(`/api/images/${entry.id}/review/approve/`, { mask_ids: ids });
    if (button) button.disabled = false;
    if (!result.ok) {
      ids.forEach((id) => this.setBusy(id, false));
      this.announce(`Nothing approved: ${result.text}`);
      return;
    }
    const { approved, unchanged } = result.data;
    for (const mask of unchanged) {
      this.setBusy(mask.id, false);
      this.showError(mask.id, `Not approved: this mask is ${mask.status} now (reload to see why).`);
    }
    for (const mask of approved) this.settle(mask.id, { ok: true }, "approved");
    const left = unchanged.length ? `; ${unchanged.length} no longer accepted, left as they are` : "";
    const text = `${approved.length} mask${approved.length === 1 ? "" : "s"} approved${left}.`;
    this.announce(text);
    if (approved.length) this.offerUndo(entry.id, approved.map((mask) => mask.id), text);
  }

  openReject(maskId) {
    const form = this.row(maskId)?.querySelector(".reject-form");
    if (!form) return;
    form.hidden = false;
    form.elements.reason.focus();
  }

  async reject(maskId, reasonText) {
    const reason = reasonText.trim();
    if (!reason) {
      this.showError(maskId, "Give a reason for the rejection.");
      return;
    }
    this.setBusy(maskId, true);
    const result = await post(`/api/masks/${maskId}/reject/`, { reason });
    this.settle(maskId, result, "rejected");
  }

  // After an API answer: on success the mask leaves the queue, else its error shows on the row.
  settle(maskId, result, verdict) {
    this.setBusy(maskId, false);
    if (!result.ok) {
      this.showError(maskId, result.text);
      return;
    }
    this.showError(maskId, "");
    const row = this.row(maskId);
    const article = row?.closest(".review-image");
    row?.remove();
    const done = document.getElementById("review-done-count");
    if (done) done.textContent = String(Number(done.textContent) + 1);
    this.announce(`Mask #${maskId} ${verdict}.`);
    if (!this.current) return;
    const { entry, layers } = this.current;
    this.offerUndo(entry.id, [maskId], `Mask #${maskId} ${verdict}.`);
    layers.delete(maskId);
    entry.masks = entry.masks.filter((mask) => mask.id !== maskId);
    const queueButton = document.querySelector(`[data-select-image="${entry.id}"]`);
    queueButton?.querySelector("[data-pending-count]")?.replaceChildren(String(entry.masks.length));
    article?.querySelector("[data-pending-count]")?.replaceChildren(String(entry.masks.length));
    if (entry.masks.length > 0) {
      this.focusId = entry.masks[0].id;
      this.markFocus();
      this.draw();
      return;
    }
    // Every mask of this image is reviewed: drop it from the queue and open the next one.
    this.images.delete(entry.id);
    article?.remove();
    const item = queueButton?.closest("li");
    const next = item?.nextElementSibling?.querySelector("[data-select-image]")
      ?? item?.previousElementSibling?.querySelector("[data-select-image]");
    item?.remove();
    if (next) {
      this.select(Number(next.dataset.selectImage));
    } else {
      this.current = null;
      document.getElementById("review-viewer").hidden = true;
      document.getElementById("review-page-done").hidden = false;
    }
  }

  /** Show the Undo bar for the latest verdict (one mask, or an image's approve-all). */
  offerUndo(imageId, maskIds, text) {
    this.lastVerdict = { imageId, maskIds, text };
    document.getElementById("review-undo-text").textContent = text;
    document.getElementById("review-undo-bar").hidden = false;
  }

  /** Take the latest verdict back: the masks return to the queue (the page reloads to show them). */
  async undo() {
    const last = this.lastVerdict;
    if (!last || this.fix) return;
    this.lastVerdict = null;
    document.getElementById("review-undo").disabled = true;
    const result = await post(`/api/images/${last.imageId}/review/undo/`, { mask_ids: last.maskIds });
    if (!result.ok) {
      document.getElementById("review-undo").disabled = false;
      document.getElementById("review-undo-text").textContent = `Undo failed: ${result.text}`;
      return;
    }
    window.location.reload();
  }

  announce(text) {
    const live = document.getElementById("review-live");
    if (live) live.textContent = text;
  }

  onKey(event) {
    if ((event.ctrlKey || event.metaKey) && shortcutKey(event) === "z" && this.lastVerdict && !this.fix && !typesText(event.target)) {
      event.preventDefault();
      this.undo();
      return;
    }
    // Keys with Ctrl/Cmd/Alt are the browser's (reload, find, select all); text fields type.
    if (event.ctrlKey || event.metaKey || event.altKey || typesText(event.target)) return;
    const key = shortcutKey(event);
    // A focused button or link keeps Enter for itself (Cancel must cancel, not save).
    if (key === "Enter" && event.target.closest?.("button, a[href]")) return;
    if (this.fix) {
      if (key === "Escape") this.endFix();
      else if (key === "Enter") this.saveFix();
      else if (key === "b" || key === "e") {
        const tool = key === "b" ? "brush" : "eraser";
        this.fixBar.querySelector(`input[value=${tool}]`).checked = true;
        this.fix.tool = tool;
      } else if (key === "[" || key === "]") {
        const size = document.getElementById("fix-size");
        size.value = String(Number(size.value) + (key === "]" ? 4 : -4));
        size.dispatchEvent(new Event("input"));
      } else return;
      event.preventDefault();
      return;
    }
    // Shift+Enter, not Shift+A: letters mean the same in either case (Caps Lock, Shift).
    if (key === "Enter" && event.shiftKey) {
      event.preventDefault();
      this.approveAll();
      return;
    }
    if (!this.current || this.focusId === null) return;
    const ids = this.current.entry.masks.map((mask) => mask.id);
    const at = ids.indexOf(this.focusId);
    if (key === "a") this.approve(this.focusId);
    else if (key === "r") this.openReject(this.focusId);
    else if (key === "f") this.beginFix(this.focusId);
    else if (key === "j" || key === "k") {
      this.focusId = ids[(at + (key === "j" ? 1 : ids.length - 1)) % ids.length];
      this.markFocus();
      this.draw();
    } else return;
    event.preventDefault();
  }
}

Object.assign(ReviewPage.prototype, fixMethods);

const holder = document.getElementById("review-data");
if (holder) new ReviewPage(JSON.parse(holder.textContent)).start();
