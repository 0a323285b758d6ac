// The annotation tool: one image at a time, prompts -> candidate masks -> touch-up -> accept.
//
// State that matters for an accepted mask lives in `this.work`: the prompt entries (each with
// the decode result it produced and the candidate chosen from it), the brush strokes painted
// on top, the counters and the active-time timer. `this.history` is the undo stack across
// prompts, strokes, clears and accepts. The image, its lease and embedding are handled in
// frame.js (the base class), brush and eraser strokes in strokes.js, editing an accepted mask in
// edit.js, input in input.js, drawing in render.js, the panel in panel.js and categories.js,
// the work in progress on one mask in work.js.

import { ApiError, uuid4 } from "./api.js";
import { acceptCategory, bindCategories, undoRelabel } from "./categories.js";
import { BrowserDecoder, ServerDecoder, bestIndex, maskOf, wantsMultimask } from "./decoder.js";
import { EditTool } from "./edit.js";
import { newWork } from "./work.js";
import { historyWithoutMask } from "./history.js";
import { maskArea, maskBox, paintRect } from "./masks.js";
import { encodeMask } from "./rle.js";
import * as session from "./session.js";
import { WORK_COLOR, applyStroke } from "./strokes.js";

// A decode or accept answered 404: an admin removed the image while it was open.
const IMAGE_GONE = "This image is no longer in the project (an admin removed it). Press N for the next image.";

class Tool extends EditTool {
  // --- prompts and decoding --------------------------------------------------------------------

  /** Entry of the latest prompt that has a decode result (what is shown). */
  resultEntry() {
    for (let i = this.work.prompts.length - 1; i >= 0; i--) {
      if (this.work.prompts[i].result) return this.work.prompts[i];
    }
    return null;
  }

  currentBox() {
    for (let i = this.work.prompts.length - 1; i >= 0; i--) {
      if (this.work.prompts[i].kind === "box") return this.work.prompts[i].box;
    }
    return null;
  }

  /** The prompt made of entries 0..upto: every point, and the latest box. */
  promptUpTo(upto) {
    const points = [];
    const labels = [];
    let box = null;
    for (const entry of this.work.prompts.slice(0, upto + 1)) {
      if (entry.kind === "point") {
        points.push([entry.x, entry.y]);
        labels.push(entry.label);
      } else {
        box = entry.box;
      }
    }
    return { points, labels, box };
  }

  canPrompt() {
    if (this.root.dataset.state === "ready" && this.decoder) return true;
    this.say(this.version ? "The model is not ready for this image yet." : "No model is deployed: use the brush (B).", "warn");
    return false;
  }

  addPrompt(entry, startedAt) {
    if (!this.canPrompt()) return;
    const work = this.work;
    work.timer.start(startedAt);
    work.clicks += 1;
    work.acceptKey = null;
    entry.result = null;
    entry.selected = 0;
    work.prompts.push(entry);
    work.events.push({ ...this.describe(entry), t: Math.round(work.timer.seconds() * 1000) });
    this.history.push({ type: "prompt" });
    this.requestFrame();
    this.updatePanel();
    const index = work.prompts.length - 1;
    const generation = work.generation;
    this.decodeChain = this.decodeChain
      .then(() => this.decodeEntry(work, generation, index, startedAt))
      .catch((error) => this.fail(error));
  }

  describe(entry) {
    return entry.kind === "point"
      ? { kind: "point", x: entry.x, y: entry.y, label: entry.label }
      : { kind: "box", box: entry.box };
  }

  async decodeEntry(work, generation, index, startedAt) {
    const entry = work.prompts[index];
    if (work !== this.work || generation !== work.generation || !entry) return;
    const before = index > 0 ? work.prompts[index - 1] : null;
    const previous = before && before.result ? before.result.candidates[before.selected] : null;
    const prompt = this.promptUpTo(index);
    const decoder = this.decoder;
    let result;
    try {
      result = await decoder.decode(prompt, previous);
    } catch (error) {
      result = await this.recoverDecode(error, decoder, prompt);
      if (!result) {
        if (work.prompts[index] === entry) {
          work.prompts.splice(index, 1);
          this.history.pop();
        }
        this.updatePanel();
        this.requestFrame();
        return;
      }
    }
    if (work !== this.work || work.prompts[index] !== entry) return; // undone or cleared meanwhile
    entry.result = result;
    entry.selected = bestIndex(result.candidates);
    entry.path = decoder.path;
    if (index === work.prompts.length - 1) {
      this.pendingLatency = { start: startedAt, path: this.decoder.path, drawn: false };
    }
    this.compose();
  }

  /** A failed decode: retry once where that can help; null when the prompt is dropped. */
  async recoverDecode(error, decoder, prompt) {
    if (!(error instanceof ApiError)) {
      if (decoder.path === "browser") {
        this.decoderNote = `browser decoding failed (${error.message}); switched to the server`;
        this.decoder = new ServerDecoder({ imageId: this.image.id, versionId: this.version.id });
        this.updatePanel();
        return this.decoder.decode(prompt, null);
      }
      this.say(`Decoding failed: ${error.message}`, "error");
      return null;
    }
    if (error.code === "invalid_mask_ref") return decoder.decode(prompt, null); // expired reference
    if (error.code === "model_version_gone") {
      const versionId = this.switchVersion(error);
      if (versionId !== null) await this.prepareModel(versionId);
      return null;
    }
    if (error.code === "embedding_not_ready") {
      this.decoder = null;
      await this.prepareModel(this.version.id);
      return null;
    }
    this.imageGone = error.status === 404;
    this.say(this.imageGone ? IMAGE_GONE : error.message, "error");
    return null;
  }

  selectCandidate(index) {
    const entry = this.resultEntry();
    if (!entry || index < 0 || index >= entry.result.candidates.length) return;
    entry.selected = index;
    this.work.events.push({ kind: "pick", candidate: index, t: Math.round(this.work.timer.seconds() * 1000) });
    this.compose();
  }

  cycleCandidate(step) {
    const entry = this.resultEntry();
    if (!entry) return;
    const count = entry.result.candidates.length;
    this.selectCandidate((entry.selected + step + count) % count);
  }

  /** The working mask = the chosen candidate (or the edited mask's pixels), then every brush stroke in order. */
  compose() {
    const { width, height } = this.image;
    const entry = this.resultEntry();
    const base = this.work.editing ? this.work.editing.base : null;
    const mask = entry ? maskOf(entry.result.candidates[entry.selected]).slice() : base ? base.slice() : new Uint8Array(width * height);
    for (const stroke of this.work.strokes) applyStroke(mask, width, height, stroke);
    this.work.mask = mask;
    this.repaintWork();
  }

  repaintWork() {
    const { width, height } = this.image;
    const ctx = this.workCanvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const box = this.work.mask ? maskBox(this.work.mask, width, height) : null;
    if (box) paintRect(ctx, this.work.mask, width, box, WORK_COLOR);
    this.work.area = maskArea(this.work.mask, width, box);
    if (this.pendingLatency) this.pendingLatency.drawn = true;
    this.updatePanel();
    this.requestFrame();
  }

  // --- accept, clear, undo, delete --------------------------------------------------------------

  async accept() {
    if (!this.image || this.accepting) return;
    await Promise.all([this.decodeChain, this.categoriesLoaded]);
    const work = this.work;
    if (!work.mask || work.area === 0) {
      this.say(work.editing ? "Not saved: the mask is empty (delete it instead)." : "Nothing to accept: the mask is empty.", "warn");
      return;
    }
    if (work.editing) return this.saveEdit();
    const { width, height } = this.image;
    const assisted = work.prompts.some((entry) => entry.result);
    const entry = this.resultEntry();
    const prompt = entry ? this.promptUpTo(work.prompts.indexOf(entry)) : { points: [], labels: [], box: null };
    work.acceptKey = work.acceptKey || uuid4();
    const body = {
      rle: encodeMask(work.mask, height, width),
      source: assisted ? "assisted" : "manual",
      model_version: assisted && this.version ? this.version.id : null,
      prompts: {
        ...prompt,
        multimask: entry ? wantsMultimask(prompt) : null,
        candidate: entry ? entry.selected : null,
        score: entry ? entry.result.candidates[entry.selected].score : null,
        decoder: entry ? entry.path : null,
        history: work.events,
      },
      clicks: work.clicks,
      brush_strokes: work.strokeCount,
      seconds_spent: Math.round(work.timer.seconds() * 1000) / 1000,
      idempotency_key: work.acceptKey,
      ...acceptCategory(this),
    };
    this.accepting = true;
    try {
      const mask = await session.storeMask(this.image.id, body);
      this.accepted.push(this.acceptedItem(mask));
      this.coverageDirty = true;
      this.history.push({ type: "accept", maskId: mask.id, work, timer: work.timer.snapshot() });
      this.work = newWork(this.idleCap);
      this.workCanvas.getContext("2d").clearRect(0, 0, width, height);
      this.say(`Mask #${mask.id} accepted (${body.source}, ${body.seconds_spent.toFixed(1)} s).`, "ok");
    } catch (error) {
      const retry = error instanceof ApiError ? "" : " Press Enter to try again.";
      this.imageGone = error instanceof ApiError && error.status === 404;
      this.say(this.imageGone ? `Not saved. ${IMAGE_GONE}` : `Not saved: ${error.message}.${retry}`, "error");
    } finally {
      this.accepting = false;
      this.updatePanel();
      this.requestFrame();
    }
  }

  clear() {
    const work = this.work;
    const editing = this.editingId();
    if (work.prompts.length === 0 && work.strokes.length === 0) {
      if (editing === null) return;
      const top = this.history[this.history.length - 1];
      if (top && top.type === "edit" && top.maskId === editing) this.history.pop();
      this.leaveEdit(`Editing of mask #${editing} cancelled.`);
      return;
    }
    this.history.push({ type: "clear", work });
    this.work = newWork(this.idleCap);
    this.workCanvas.getContext("2d").clearRect(0, 0, this.image.width, this.image.height);
    this.say(editing === null ? "Prompts cleared (Ctrl+Z brings them back)." : `Editing of mask #${editing} cancelled (Ctrl+Z brings it back).`);
    this.updatePanel();
    this.requestFrame();
  }

  async undo() {
    const action = this.history.pop();
    if (!action) {
      this.say("Nothing to undo.");
      return;
    }
    const work = this.work;
    const t = Math.round(work.timer.seconds() * 1000);
    const stale = (action.type === "prompt" && !work.prompts.length) || (action.type === "stroke" && !work.strokes.length);
    if (stale) return this.undo(); // its step is gone already (a failed decode): undo the one before
    if (action.type === "prompt") {
      const entry = work.prompts.pop();
      work.events.push({ kind: "undo", undid: entry.kind, t });
      work.acceptKey = null;
      this.compose();
    } else if (action.type === "stroke") {
      work.strokes.pop();
      work.events.push({ kind: "undo", undid: "stroke", t });
      work.acceptKey = null;
      this.compose();
    } else if (action.type === "clear") {
      this.work = action.work;
      this.compose();
    } else if (action.type === "edit") {
      if (!this.undoEditStart(action)) return this.undo(); // stale: that edit ended otherwise
    } else if (action.type === "edit-saved") {
      await this.undoSavedEdit(action);
    } else if (action.type === "relabel") {
      await undoRelabel(this, action);
    } else if (action.type === "accept") {
      try {
        await session.deleteMask(action.maskId);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) {
          this.history.push(action);
          this.say(`Undo failed: ${error.message}`, "error");
          return;
        }
      }
      this.accepted = this.accepted.filter((item) => item.id !== action.maskId);
      this.coverageDirty = true;
      this.work = action.work;
      this.work.acceptKey = null;
      this.work.timer.restore(action.timer);
      this.work.events.push({ kind: "undo", undid: "accept", t: Math.round(this.work.timer.seconds() * 1000) });
      this.compose();
      this.say(`Mask #${action.maskId} removed; it is back in the editor.`);
    } else if (action.type === "reject") {
      try {
        const mask = await session.restorePrefill(action.maskId);
        this.accepted.splice(Math.min(action.index, this.accepted.length), 0, this.acceptedItem(mask));
      } catch (error) {
        this.history.push(action);
        this.say(`Undo failed: ${error.message}`, "error");
        return;
      }
      this.coverageDirty = true;
      this.say(`Prefilled mask #${action.maskId} is back.`);
      this.updatePanel();
      this.requestFrame();
    }
  }

  /** Reject a wrong prefilled mask (it stays on the server as rejected; Ctrl+Z restores). */
  async rejectPrefill(maskId) {
    const index = this.accepted.findIndex((item) => item.id === maskId);
    if (index < 0 || !this.accepted[index].prefill) return;
    try {
      await session.rejectPrefill(maskId);
    } catch (error) {
      this.say(`Reject failed: ${error.message}`, "error");
      return;
    }
    this.accepted.splice(index, 1);
    this.history.push({ type: "reject", maskId, index });
    this.coverageDirty = true;
    if (this.hoveredId === maskId) this.hoveredId = null;
    this.say(`Prefilled mask #${maskId} rejected (Ctrl+Z brings it back).`);
    this.updatePanel();
    this.requestFrame();
  }

  async deleteAccepted(maskId) {
    const item = this.accepted.find((entry) => entry.id === maskId);
    if (item && item.prefill) {
      await this.rejectPrefill(maskId);
      return;
    }
    try {
      await session.deleteMask(maskId);
    } catch (error) {
      this.say(`Delete failed: ${error.message}`, "error");
      return;
    }
    this.accepted = this.accepted.filter((item) => item.id !== maskId);
    this.coverageDirty = true;
    this.history = historyWithoutMask(this.history, maskId); // deleting cannot be undone
    if (this.editingId() === maskId) {
      this.work = newWork(this.idleCap);
      this.workCanvas.getContext("2d").clearRect(0, 0, this.image.width, this.image.height);
    }
    if (this.hoveredId === maskId) this.hoveredId = null;
    this.say(`Mask #${maskId} deleted.`);
    this.updatePanel();
    this.requestFrame();
  }

  hover(maskId) {
    if (this.hoveredId === maskId) return;
    this.hoveredId = maskId;
    for (const row of this.root.querySelectorAll("#accepted-list li")) {
      row.classList.toggle("hovered", Number(row.dataset.maskId) === maskId);
    }
    this.requestFrame();
  }

  // --- hooks for the browser tests and the latency bench ------------------------------------------

  /** RLE of the working mask (what Enter would store). */
  workRle() {
    return this.work.mask ? encodeMask(this.work.mask, this.image.height, this.image.width) : null;
  }

  /**
   * Decode a chain of prompts with one path ("browser" or "server"), each step feeding the
   * best-scored candidate of the step before; returns per step [{score, rle}]. Uses the
   * current image and version, and does not touch the work in progress.
   */
  async decodeVia(path, prompts) {
    const { image, version, embedding } = this;
    const decoder =
      path === "browser"
        ? await BrowserDecoder.create({ ortUrl: this.ortUrl, wasmBase: this.wasmBase, version, embedding })
        : new ServerDecoder({ imageId: image.id, versionId: version.id });
    const steps = [];
    let previous = null;
    for (const prompt of prompts) {
      const result = await decoder.decode(prompt, previous);
      steps.push(result.candidates.map((c) => ({ score: c.score, rle: encodeMask(maskOf(c), image.height, image.width) })));
      previous = result.candidates[bestIndex(result.candidates)];
    }
    return steps;
  }
}

const root = document.getElementById("tool");
const tool = new Tool(root);
window.maskloopTool = tool;
bindCategories(tool);
tool.start();
