// "Skip image" (S): set an image nobody can annotate aside, with a reason, and go on. The
// server takes it out of the queue and keeps its masks out of exports and training until a
// reviewer reopens it.

import { ApiError } from "./api.js";
import * as session from "./session.js";

export function skipDialogOpen(tool) {
  return !tool.$("#skip-overlay").hidden;
}

export function openSkip(tool) {
  if (!tool.image) return;
  const overlay = tool.$("#skip-overlay");
  overlay.hidden = false;
  tool.$("#skip-error").textContent = "";
  const input = tool.$("#skip-reason");
  input.value = "";
  input.focus();
}

export function closeSkip(tool) {
  tool.$("#skip-overlay").hidden = true;
  tool.canvas.focus();
}

async function submitSkip(tool) {
  const reason = tool.$("#skip-reason").value.trim();
  if (!reason) {
    tool.$("#skip-error").textContent = "Say why: pick a reason or type one.";
    return;
  }
  const image = tool.image;
  const button = tool.$("#skip-submit");
  button.disabled = true;
  try {
    await session.skipImage(image.id, reason);
  } catch (error) {
    // Removed meanwhile: nothing left to skip, go on as if it had worked.
    if (!(error instanceof ApiError && error.status === 404)) {
      tool.$("#skip-error").textContent = error.message || String(error);
      return;
    }
  } finally {
    button.disabled = false;
  }
  closeSkip(tool);
  tool.lease = null; // the skip released it: nothing to renew or give back
  await tool.next({ markDone: false });
  tool.say(`Image #${image.id} skipped (${reason}). ${tool.$("#status-message").textContent}`, "info");
}

export function bindSkip(tool) {
  const overlay = tool.$("#skip-overlay");
  tool.$("#skip-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitSkip(tool);
  });
  const input = tool.$("#skip-reason");
  input.addEventListener("input", () => (tool.$("#skip-error").textContent = ""));
  for (const chip of overlay.querySelectorAll("[data-skip-reason]")) {
    chip.addEventListener("click", () => {
      input.value = chip.dataset.skipReason;
      tool.$("#skip-error").textContent = "";
      input.focus();
    });
  }
  overlay.querySelector("[data-skip-cancel]").addEventListener("click", () => closeSkip(tool));
  overlay.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      closeSkip(tool);
    }
  });
  overlay.addEventListener("click", (event) => {
    if (event.target === event.currentTarget) closeSkip(tool);
  });
}
