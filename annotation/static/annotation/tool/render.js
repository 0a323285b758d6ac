// Drawing the tool's canvas: image, accepted masks, the mask being made, prompts, cursors.

const WORK_ALPHA = 0.55;
const POSITIVE = "#12b76a";
const NEGATIVE = "#f04438";

/** Draw one frame of the tool's state onto its canvas (CSS-pixel viewport `tool.view`). */
export function drawFrame(tool) {
  const { canvas, view } = tool;
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#1d2330";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  // Between choosing an image and its pixels arriving there is nothing to draw (the previous
  // image's element was dropped, so it cannot show under the new image's view either).
  if (!tool.image || !tool.imageElement) return;
  ctx.setTransform(dpr * view.scale, 0, 0, dpr * view.scale, dpr * view.tx, dpr * view.ty);
  ctx.imageSmoothingEnabled = view.scale < 2; // crisp pixels when zoomed in
  ctx.drawImage(tool.imageElement, 0, 0);
  ctx.imageSmoothingEnabled = false;
  if (tool.overlays.uncovered) {
    tool.refreshCoverage();
    ctx.globalAlpha = 0.5;
    ctx.drawImage(tool.coverageCanvas, 0, 0);
  }
  if (tool.overlays.visible) {
    const editing = tool.editingId(); // the editor draws that one
    for (const item of tool.accepted) {
      if (!item.bitmap || item.id === editing) continue;
      const hovered = item.id === tool.hoveredId;
      ctx.globalAlpha = hovered ? Math.min(1, tool.overlays.opacity + 0.35) : tool.overlays.opacity;
      ctx.drawImage(item.bitmap.canvas, item.bitmap.box[0], item.bitmap.box[1]);
    }
  } else if (tool.hoveredId !== null) {
    const item = tool.accepted.find((m) => m.id === tool.hoveredId);
    if (item && item.bitmap) {
      ctx.globalAlpha = 0.6;
      ctx.drawImage(item.bitmap.canvas, item.bitmap.box[0], item.bitmap.box[1]);
    }
  }
  if (tool.work.area > 0) {
    ctx.globalAlpha = WORK_ALPHA;
    ctx.drawImage(tool.workCanvas, 0, 0);
  }
  ctx.globalAlpha = 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  drawPrompts(ctx, tool);
  drawGesture(ctx, tool);
}

function drawPrompts(ctx, tool) {
  const { view } = tool;
  const box = tool.currentBox();
  if (box) {
    const [ax, ay] = view.toScreen(box[0], box[1]);
    const [bx, by] = view.toScreen(box[2] + 1, box[3] + 1);
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fdb022";
    ctx.strokeRect(ax, ay, bx - ax, by - ay);
    ctx.setLineDash([]);
  }
  for (const entry of tool.work.prompts) {
    if (entry.kind !== "point") continue;
    const [sx, sy] = view.toScreen(entry.x + 0.5, entry.y + 0.5);
    ctx.beginPath();
    ctx.arc(sx, sy, 6, 0, Math.PI * 2);
    ctx.fillStyle = entry.label === 1 ? POSITIVE : NEGATIVE;
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.fillStyle = "#fff";
    ctx.fillRect(sx - 3, sy - 1, 6, 2);
    if (entry.label === 1) ctx.fillRect(sx - 1, sy - 3, 2, 6);
  }
}

function drawGesture(ctx, tool) {
  const { view, gesture, pointer } = tool;
  if (gesture && gesture.kind === "box" && gesture.dragging) {
    ctx.setLineDash([4, 4]);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#fdb022";
    const x = Math.min(gesture.sx, gesture.cx);
    const y = Math.min(gesture.sy, gesture.cy);
    ctx.strokeRect(x, y, Math.abs(gesture.cx - gesture.sx), Math.abs(gesture.cy - gesture.sy));
    ctx.setLineDash([]);
  }
  if ((tool.mode === "brush" || tool.mode === "eraser") && pointer.inside && !tool.panning) {
    ctx.beginPath();
    ctx.arc(pointer.sx, pointer.sy, Math.max(1, tool.brushSize * view.scale), 0, Math.PI * 2);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = tool.mode === "brush" ? "#fff" : "#f97066";
    ctx.stroke();
  }
}
