// Editing an accepted mask: M over a mask (or its Edit button) opens it in the editor, where
// brush and eraser touch it up and prompts segment it anew; Enter saves the new pixels under
// the same mask id (PATCH /api/masks/{id}/), Esc leaves it as it was. The mask's own overlay
// is hidden meanwhile: the editor draws it. Masks a reviewer rejected ("sent back", listed in
// the panel) are fixed the same way, and saving sends them back to review. A new category
// picked in the panel meanwhile (categories.js) is saved with the edit, or alone: a relabel.
// Sits between strokes.js and tool.js.

import { ApiError } from "./api.js";
import { relabelOf } from "./categories.js";
import { newWork } from "./work.js";
import { historyWithoutMask } from "./history.js";
import { decodeMask, encodeMask } from "./rle.js";
import * as session from "./session.js";
import { StrokeTool } from "./strokes.js";

export class EditTool extends StrokeTool {
  /** The id of the accepted mask in the editor, or null. */
  editingId() {
    return this.work.editing ? this.work.editing.maskId : null;
  }

  mayReview() {
    return ["reviewer", "admin"].includes(this.root.dataset.role);
  }

  /** Annotators edit their own masks; reviewers and admins any; prefilled ones are rejected instead. */
  mayEdit(item) {
    if (!item || item.prefill) return false;
    return item.annotator === this.userId || this.mayReview();
  }

  /** An accepted or sent-back mask of the image by id. */
  editable(maskId) {
    return this.accepted.find((entry) => entry.id === maskId) || this.sentBack.find((entry) => entry.id === maskId);
  }

  /** The image's masks sent back by review, listed in the panel; then the one a link named. */
  showSentBack(masks) {
    this.sentBack = masks.map((mask) => ({ ...this.acceptedItem(mask), reason: mask.rejection_reason }));
    const count = this.sentBack.length;
    if (count) {
      this.say(`${count} mask${count > 1 ? "s" : ""} on this image ${count > 1 ? "were" : "was"} sent back by review: see the panel, press Fix.`, "warn");
    }
    this.openRequestedEdit();
  }

  /** The mask a "Fix in the tool" link named, once its image is loaded (asked for once). */
  openRequestedEdit() {
    const maskId = this.requestedEditId;
    this.requestedEditId = null;
    if (maskId === null) return;
    if (this.editable(maskId)) this.startEdit(maskId);
    else this.say(`Mask #${maskId} is not on this image any more, or no longer sent back.`, "warn");
  }

  startEdit(maskId) {
    const item = this.editable(maskId);
    if (!item) return;
    if (item.prefill) {
      this.say("A prefilled mask is not edited: reject it (R) and draw the object anew.", "warn");
      return;
    }
    if (!this.mayEdit(item)) {
      this.say(`Mask #${maskId} is another annotator's: only a reviewer may edit it.`, "warn");
      return;
    }
    if (this.editingId() === maskId) return;
    if (this.work.prompts.length || this.work.strokes.length) {
      this.say("Accept (Enter) or clear (Esc) the mask in progress before editing another.", "warn");
      return;
    }
    this.work = newWork(this.idleCap);
    this.work.editing = {
      maskId,
      base: decodeMask(item.segmentation),
      counted: { clicks: 0, strokes: 0, seconds: 0 }, // effort already stored by a saved edit
      category: item.category, // shown by the panel's select; a change is saved with the edit
    };
    this.history.push({ type: "edit", maskId });
    this.compose();
    const why = item.reason ? ` Sent back: “${item.reason}”.` : "";
    this.say(`Editing mask #${maskId}: brush (B) and eraser (E) touch it up, a click segments it anew. Enter saves, Esc cancels.${why}`);
  }

  /** Enter while editing: store the new pixels and/or category under the mask's id. */
  async saveEdit() {
    const work = this.work;
    const { maskId } = work.editing;
    const item = this.editable(maskId);
    const redrawn = work.prompts.length > 0 || work.strokes.length > 0;
    const relabel = item ? relabelOf(this, item) : null;
    if (!item || (!redrawn && !relabel)) {
      this.leaveEdit(!item ? `Mask #${maskId} is gone.` : `Mask #${maskId} unchanged.`);
      return;
    }
    const { width, height } = this.image;
    const seconds = Math.round(work.timer.seconds() * 1000) / 1000;
    const { counted } = work.editing;
    const body = {
      ...(redrawn ? { rle: encodeMask(work.mask, height, width) } : {}), // a relabel alone keeps them
      ...relabel,
      clicks: work.clicks - counted.clicks,
      brush_strokes: work.strokeCount - counted.strokes,
      seconds_spent: Math.max(0, Math.round((seconds - counted.seconds) * 1000) / 1000),
    };
    const before = item.segmentation;
    const categoryBefore = relabel ? { category: item.category } : {}; // what an undo puts back
    const resubmit = Boolean(item.reason);
    this.accepting = true;
    try {
      const mask = await session.editMask(maskId, body);
      work.editing.counted = { clicks: work.clicks, strokes: work.strokeCount, seconds };
      this.replaceAccepted(mask);
      this.history.push({ type: "edit-saved", maskId, work, before, categoryBefore, timer: work.timer.snapshot() });
      // A fixed rejected mask is back in the review queue: that is not taken back by an undo.
      if (resubmit) this.history = historyWithoutMask(this.history, maskId);
      this.work = newWork(this.idleCap);
      this.workCanvas.getContext("2d").clearRect(0, 0, width, height);
      this.say(resubmit ? `Mask #${maskId} fixed and sent back to review.` : `Mask #${maskId} saved (edit ${mask.edit_count}, Ctrl+Z undoes it).`, "ok");
    } catch (error) {
      if (error instanceof ApiError && error.status === 404 && this.image) {
        // Deleted meanwhile (a reviewer, another tab): keep the work as a new mask to accept.
        this.accepted = this.accepted.filter((entry) => entry.id !== maskId);
        this.sentBack = this.sentBack.filter((entry) => entry.id !== maskId);
        work.editing = null;
        this.say(`Mask #${maskId} no longer exists: press Enter to store your version as a new mask.`, "warn");
      } else {
        const retry = error instanceof ApiError ? "" : " Press Enter to try again.";
        this.say(`Not saved: ${error.message}.${retry}`, "error");
      }
    } finally {
      this.accepting = false;
      this.updatePanel();
      this.requestFrame();
    }
  }

  /** Ctrl+Z over a saved edit: the mask's previous pixels (and category) are stored again and
   * the edit comes back into the editor. The effort the edit took stays counted. */
  async undoSavedEdit(action) {
    try {
      const mask = await session.editMask(action.maskId, { rle: action.before, ...action.categoryBefore });
      this.replaceAccepted(mask);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        this.history.push(action);
        this.say(`Undo failed: ${error.message}`, "error");
        return;
      }
      this.say(`Mask #${action.maskId} no longer exists.`, "warn");
      return;
    }
    this.work = action.work;
    this.work.timer.restore(action.timer);
    this.work.events.push({ kind: "undo", undid: "edit", t: Math.round(this.work.timer.seconds() * 1000) });
    this.compose();
    this.say(`Edit of mask #${action.maskId} undone; it is back in the editor.`);
  }

  /** Ctrl+Z over the start of an edit: leave the editor (nothing was changed yet). */
  undoEditStart(action) {
    if (this.editingId() !== action.maskId || this.work.prompts.length || this.work.strokes.length) return false;
    this.leaveEdit(`Editing of mask #${action.maskId} cancelled.`);
    return true;
  }

  leaveEdit(message) {
    this.work = newWork(this.idleCap);
    this.workCanvas.getContext("2d").clearRect(0, 0, this.image.width, this.image.height);
    this.say(message);
    this.updatePanel();
    this.requestFrame();
  }

  /** A saved mask: replaced in the accepted list, or moved there from the sent-back one. */
  replaceAccepted(mask) {
    const index = this.accepted.findIndex((entry) => entry.id === mask.id);
    if (index >= 0) this.accepted[index] = this.acceptedItem(mask);
    else if (this.sentBack.some((entry) => entry.id === mask.id)) {
      this.sentBack = this.sentBack.filter((entry) => entry.id !== mask.id);
      this.accepted.push(this.acceptedItem(mask));
    }
    this.coverageDirty = true;
  }
}
