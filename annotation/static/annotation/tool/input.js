// Mouse, keyboard and panel controls of the tool (see docs/annotator-guide.md for the list).
//
// Prompt mode: left click = positive point, right click or Alt+click = negative point, drag =
// box. Brush/eraser mode: drag paints (right button erases). Wheel zooms at the cursor; space
// + drag or middle-button drag pans.

import { shortcutKey, typesText } from "../keys.js";
import { cycleCategory, focusCategory } from "./categories.js";
import { bitmapHit } from "./masks.js";
import { closeSkip, openSkip, skipDialogOpen } from "./skip.js";
import { openPrevious } from "./visited.js";

const DRAG_THRESHOLD_PX = 5;
const ZOOM_PER_WHEEL_UNIT = 0.0015;

export function bindInput(tool) {
  const { canvas } = tool;
  const resize = () => {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * dpr));
    canvas.height = Math.max(1, Math.round(rect.height * dpr));
    tool.requestFrame();
  };
  new ResizeObserver(resize).observe(canvas);
  resize();

  let spaceDown = false;
  const local = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  };
  const imagePixel = (sx, sy) => {
    const [ix, iy] = tool.view.toImage(sx, sy);
    return [Math.floor(ix), Math.floor(iy)];
  };
  const inImage = (x, y) => tool.image && x >= 0 && y >= 0 && x < tool.image.width && y < tool.image.height;
  const clampX = (x) => Math.max(0, Math.min(tool.image.width - 1, x));
  const clampY = (y) => Math.max(0, Math.min(tool.image.height - 1, y));

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const [sx, sy] = local(event);
      const unit = event.deltaMode === 1 ? 30 : 1; // lines -> pixels
      tool.view.zoomAt(Math.exp(-event.deltaY * unit * ZOOM_PER_WHEEL_UNIT), sx, sy);
      tool.updatePanel();
      tool.requestFrame();
    },
    { passive: false },
  );

  canvas.addEventListener("pointerdown", (event) => {
    canvas.focus();
    tool.work.timer.touch();
    const [sx, sy] = local(event);
    if (event.button === 1 || (event.button === 0 && spaceDown)) {
      event.preventDefault();
      tool.gesture = { kind: "pan", lastX: sx, lastY: sy };
      tool.panning = true;
      canvas.setPointerCapture(event.pointerId);
      canvas.dataset.cursor = "grabbing";
      return;
    }
    if (!tool.image || (event.button !== 0 && event.button !== 2)) return;
    const [x, y] = imagePixel(sx, sy);
    if (tool.mode === "prompt") {
      tool.gesture = {
        kind: "box", sx, sy, cx: sx, cy: sy, dragging: false,
        negative: event.button === 2 || event.altKey,
      };
      canvas.setPointerCapture(event.pointerId);
    } else {
      const erase = tool.mode === "eraser" || event.button === 2;
      const stroke = tool.beginStroke(erase ? "eraser" : "brush", x + 0.5, y + 0.5, event.timeStamp);
      tool.gesture = { kind: "stroke", stroke };
      canvas.setPointerCapture(event.pointerId);
    }
  });

  canvas.addEventListener("pointermove", (event) => {
    const [sx, sy] = local(event);
    tool.pointer = { sx, sy, inside: true };
    const gesture = tool.gesture;
    if (gesture && gesture.kind === "pan") {
      tool.view.pan(sx - gesture.lastX, sy - gesture.lastY);
      gesture.lastX = sx;
      gesture.lastY = sy;
    } else if (gesture && gesture.kind === "box") {
      gesture.cx = sx;
      gesture.cy = sy;
      if (Math.hypot(sx - gesture.sx, sy - gesture.sy) > DRAG_THRESHOLD_PX) gesture.dragging = true;
    } else if (gesture && gesture.kind === "stroke") {
      const [x, y] = imagePixel(sx, sy);
      tool.extendStroke(gesture.stroke, x + 0.5, y + 0.5);
    } else if (tool.image) {
      const [x, y] = imagePixel(sx, sy);
      const hit = inImage(x, y) ? topMaskAt(tool, x, y) : null;
      tool.hover(hit);
    }
    tool.requestFrame();
  });

  canvas.addEventListener("pointerleave", () => {
    tool.pointer.inside = false;
    if (!tool.gesture) tool.hover(null);
    tool.requestFrame();
  });

  canvas.addEventListener("pointerup", (event) => {
    const gesture = tool.gesture;
    tool.gesture = null;
    tool.panning = false;
    canvas.dataset.cursor = spaceDown ? "grab" : "";
    if (!gesture) return;
    if (gesture.kind === "stroke") {
      tool.endStroke(gesture.stroke);
    } else if (gesture.kind === "box") {
      const [ax, ay] = imagePixel(gesture.sx, gesture.sy);
      const [bx, by] = imagePixel(gesture.cx, gesture.cy);
      if (gesture.dragging) {
        const box = [clampX(Math.min(ax, bx)), clampY(Math.min(ay, by)), clampX(Math.max(ax, bx)), clampY(Math.max(ay, by))];
        if (box[2] > box[0] && box[3] > box[1]) tool.addPrompt({ kind: "box", box }, event.timeStamp);
      } else if (inImage(ax, ay)) {
        tool.addPrompt({ kind: "point", x: ax, y: ay, label: gesture.negative ? 0 : 1 }, event.timeStamp);
      }
    }
    tool.requestFrame();
  });

  document.addEventListener("keydown", (event) => {
    if (skipDialogOpen(tool)) {
      if (event.key === "Escape") closeSkip(tool); // wherever the focus went in the box
      return;
    }
    if (typesText(event.target)) return;
    tool.work.timer.touch();
    const key = shortcutKey(event); // letters in lower case: Shift and Caps Lock change nothing
    const ctrl = event.ctrlKey || event.metaKey;
    if (key === " ") {
      if (!spaceDown) canvas.dataset.cursor = "grab";
      spaceDown = true;
      event.preventDefault();
    } else if (key === "Enter") {
      event.preventDefault();
      tool.accept();
    } else if (key === "Escape") {
      if (!tool.$("#help-overlay").hidden) toggleHelp(tool, false);
      else tool.clear();
    } else if (ctrl && key === "z") {
      event.preventDefault();
      tool.undo();
    } else if (key === "Tab") {
      event.preventDefault();
      tool.cycleCandidate(event.shiftKey ? -1 : 1);
    } else if (ctrl || event.altKey) {
      return;
    } else if (key === "1" || key === "2" || key === "3") {
      tool.selectCandidate(Number(key) - 1);
    } else if (key === "n") {
      tool.next({ markDone: true });
    } else if (key === "s") {
      event.preventDefault(); // the letter must not land in the reason field
      openSkip(tool);
    } else if (key === "p" || key === "v") {
      setMode(tool, "prompt");
    } else if (key === "b") {
      setMode(tool, "brush");
    } else if (key === "e") {
      setMode(tool, "eraser");
    } else if (key === "[" || key === "]") {
      setBrushSize(tool, key === "]" ? tool.brushSize * 1.25 : tool.brushSize / 1.25);
    } else if (key === "f") {
      tool.fit();
    } else if (key === "o") {
      tool.overlays.visible = !tool.overlays.visible;
      tool.$("#overlay-toggle").checked = tool.overlays.visible;
      tool.requestFrame();
    } else if (key === "c") {
      cycleCategory(tool);
    } else if (key === "l") {
      event.preventDefault(); // the letter must not pick a category in the list
      focusCategory(tool);
    } else if (key === "u") {
      setUncovered(tool, !tool.overlays.uncovered);
    } else if (key === "m" && tool.hoveredId !== null) {
      tool.startEdit(tool.hoveredId);
    } else if (key === "r" && tool.hoveredId !== null) {
      tool.rejectPrefill(tool.hoveredId);
    } else if ((key === "Delete" || key === "Backspace") && tool.hoveredId !== null) {
      event.preventDefault();
      tool.deleteAccepted(tool.hoveredId);
    } else if (key === "?") {
      toggleHelp(tool);
    }
  });
  document.addEventListener("keyup", (event) => {
    if (event.key === " ") {
      spaceDown = false;
      canvas.dataset.cursor = "";
    }
  });

  // Panel controls
  for (const button of tool.root.querySelectorAll("[data-mode-button]")) {
    button.addEventListener("click", () => setMode(tool, button.dataset.modeButton));
  }
  const actions = {
    accept: () => tool.accept(),
    clear: () => tool.clear(),
    undo: () => tool.undo(),
    next: () => tool.next({ markDone: true }),
    skip: () => openSkip(tool),
    previous: () => openPrevious(tool),
    fit: () => tool.fit(),
    help: () => toggleHelp(tool),
  };
  for (const button of tool.root.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => actions[button.dataset.action]());
  }
  tool.$("#brush-size").addEventListener("input", (event) => setBrushSize(tool, Number(event.target.value)));
  tool.$("#overlay-toggle").addEventListener("change", (event) => {
    tool.overlays.visible = event.target.checked;
    tool.requestFrame();
  });
  tool.$("#uncovered-toggle").addEventListener("change", (event) => setUncovered(tool, event.target.checked));
  tool.$("#overlay-opacity").addEventListener("input", (event) => {
    tool.overlays.opacity = Number(event.target.value) / 100;
    tool.requestFrame();
  });
  tool.$("#help-overlay").addEventListener("click", (event) => {
    if (event.target === event.currentTarget) toggleHelp(tool, false);
  });
}

function setMode(tool, mode) {
  tool.mode = mode;
  tool.canvas.dataset.mode = mode;
  tool.updatePanel();
  tool.requestFrame();
}

/** Show or hide the pixels that no mask covers yet (U). */
function setUncovered(tool, on) {
  tool.overlays.uncovered = on;
  tool.$("#uncovered-toggle").checked = on;
  tool.updatePanel();
  tool.requestFrame();
}

function setBrushSize(tool, size) {
  tool.brushSize = Math.max(1, Math.min(500, Math.round(size)));
  tool.updatePanel();
  tool.requestFrame();
}

function toggleHelp(tool, show = undefined) {
  const overlay = tool.$("#help-overlay");
  overlay.hidden = show === undefined ? !overlay.hidden : !show;
}

/** The accepted mask drawn on top at image pixel (x, y), or null. */
function topMaskAt(tool, x, y) {
  for (let i = tool.accepted.length - 1; i >= 0; i--) {
    const item = tool.accepted[i];
    if (item.bitmap && bitmapHit(item.bitmap, x, y)) return item.id;
  }
  return null;
}
