// The review page's Fix: brush and eraser on one mask, then "Save fix" (POST
// /api/masks/{id}/fix/). Methods of ReviewPage (review.js mixes them in); also the page's
// POST helper.
import { api, ApiError } from "./tool/api.js";

/** POST JSON; resolves to {ok, data} or {ok: false, text} with the server's explanation. */
export async function post(url, body) {
  try {
    const { data } = await api("POST", url, body ?? {});
    return { ok: true, data };
  } catch (error) {
    if (!(error instanceof ApiError)) return { ok: false, text: "network error: the server could not be reached" };
    const fields = Object.entries(error.body || {}).filter(([key]) => key !== "detail" && key !== "code");
    if (!error.body?.detail && fields.length) {
      // DRF field errors, e.g. {"reason": ["Ensure this field has no more than 500 characters."]}
      return { ok: false, text: fields.map(([key, value]) => `${key}: ${[].concat(value).join(" ")}`).join("; ") };
    }
    return { ok: false, text: error.message };
  }
}

export const fixMethods = {
  wireFixBar() {
    this.fixBar.querySelectorAll("input[name=fix-tool]").forEach((input) => {
      input.addEventListener("change", () => { if (this.fix) this.fix.tool = input.value; });
    });
    const size = document.getElementById("fix-size");
    size.addEventListener("input", () => { if (this.fix) { this.fix.radius = Number(size.value) / 2; this.draw(); } });
    document.getElementById("fix-save").addEventListener("click", () => this.saveFix());
    document.getElementById("fix-cancel").addEventListener("click", () => this.endFix());
  },

  beginFix(maskId) {
    if (!this.current || !this.current.layers.has(maskId)) return;
    if (this.fix) this.endFix();
    const size = document.getElementById("fix-size");
    const tool = this.fixBar.querySelector("input[name=fix-tool]:checked")?.value ?? "brush";
    this.fix = { layer: this.current.layers.get(maskId), tool, radius: Number(size.value) / 2, last: null, drawing: false };
    this.focusId = maskId;
    this.markFocus();
    this.fixBar.hidden = false;
    document.getElementById("fix-mask-id").textContent = `#${maskId}`;
    this.canvas.classList.add("is-fixing");
    this.row(maskId)?.classList.add("is-fixing");
    this.draw();
  },

  endFix() {
    if (!this.fix) return;
    this.fix.layer.reset();
    this.row(this.fix.layer.id)?.classList.remove("is-fixing");
    this.fix = null;
    this.fixBar.hidden = true;
    this.canvas.classList.remove("is-fixing");
    this.draw();
  },

  async saveFix() {
    if (!this.fix) return;
    const { layer } = this.fix;
    if (layer.area() === 0) {
      this.showError(layer.id, "The fixed mask is empty: reject it instead.");
      return;
    }
    const rle = layer.toRle();
    document.getElementById("fix-save").disabled = true;
    const result = await post(`/api/masks/${layer.id}/fix/`, { rle });
    document.getElementById("fix-save").disabled = false;
    if (!result.ok) {
      this.showError(layer.id, result.text);
      return;
    }
    this.row(layer.id)?.classList.remove("is-fixing");
    this.fix = null;
    this.fixBar.hidden = true;
    this.canvas.classList.remove("is-fixing");
    this.settle(layer.id, result, "fixed");
  },

  imagePoint(event) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.canvas.height) / rect.height,
    };
  },

  // Paint along the segment from the previous pointer position so fast strokes leave no gaps.
  stroke(point) {
    const { layer, tool, radius, last } = this.fix;
    const value = tool === "eraser" ? 0 : 1;
    const from = last ?? point;
    const steps = Math.max(1, Math.ceil(Math.hypot(point.x - from.x, point.y - from.y) / Math.max(1, radius / 2)));
    for (let i = 1; i <= steps; i++) {
      layer.disc(from.x + ((point.x - from.x) * i) / steps, from.y + ((point.y - from.y) * i) / steps, radius, value);
    }
    this.fix.last = point;
  },

  wireCanvas() {
    this.canvas.addEventListener("pointerdown", (event) => {
      if (!this.fix || event.button !== 0) return;
      this.canvas.setPointerCapture(event.pointerId);
      this.fix.last = null;
      this.fix.drawing = true;
      this.stroke(this.imagePoint(event));
      this.draw();
    });
    this.canvas.addEventListener("pointermove", (event) => {
      if (!this.fix) return;
      this.cursor = this.imagePoint(event);
      if (this.fix.drawing) this.stroke(this.cursor);
      this.draw();
    });
    const stop = () => { if (this.fix) { this.fix.drawing = false; this.fix.last = null; } };
    this.canvas.addEventListener("pointerup", stop);
    this.canvas.addEventListener("pointercancel", stop);
    this.canvas.addEventListener("pointerleave", () => { this.cursor = null; this.draw(); });
  },
};
