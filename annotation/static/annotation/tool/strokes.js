// Brush and eraser strokes on the current mask, between the image frame (frame.js) and the
// prompt / accept logic (tool.js). A stroke is painted on the work canvas as the pointer moves;
// its exact area is counted when it ends. Strokes are replayed over the chosen candidate by
// `applyStroke` whenever the mask is recomposed.

import { ToolBase } from "./frame.js";
import { maskArea, maskBox, paintRect, paintSegment } from "./masks.js";

export const WORK_COLOR = [46, 144, 250];

export class StrokeTool extends ToolBase {
  beginStroke(mode, x, y, startedAt) {
    const { width, height } = this.image;
    const work = this.work;
    work.timer.start(startedAt);
    if (!work.mask) work.mask = new Uint8Array(width * height);
    const stroke = { mode, radius: this.brushSize, points: [[x, y]] };
    work.strokes.push(stroke);
    work.strokeCount += 1;
    work.acceptKey = null;
    this.history.push({ type: "stroke" });
    this.paintStroke(stroke, x, y, x, y);
    return stroke;
  }

  extendStroke(stroke, x, y) {
    const [lx, ly] = stroke.points[stroke.points.length - 1];
    if (lx === x && ly === y) return;
    stroke.points.push([x, y]);
    this.paintStroke(stroke, lx, ly, x, y);
  }

  paintStroke(stroke, ax, ay, x, y) {
    const { width, height } = this.image;
    const rect = paintSegment(this.work.mask, width, height, ax, ay, x, y, stroke.radius, stroke.mode === "brush" ? 1 : 0);
    if (rect) paintRect(this.workCanvas.getContext("2d"), this.work.mask, width, rect, WORK_COLOR);
    this.work.area = 1; // exact area is counted when the stroke ends
    this.requestFrame();
  }

  endStroke(stroke) {
    this.work.events.push({ kind: stroke.mode, radius: stroke.radius, points: stroke.points.length, t: Math.round(this.work.timer.seconds() * 1000) });
    const { width, height } = this.image;
    this.work.area = maskArea(this.work.mask, width, maskBox(this.work.mask, width, height));
    if (this.work.area === 0) this.workCanvas.getContext("2d").clearRect(0, 0, width, height);
    this.updatePanel();
    this.requestFrame();
  }
}

export function applyStroke(mask, width, height, stroke) {
  const value = stroke.mode === "brush" ? 1 : 0;
  let [ax, ay] = stroke.points[0];
  paintSegment(mask, width, height, ax, ay, ax, ay, stroke.radius, value);
  for (const [bx, by] of stroke.points.slice(1)) {
    paintSegment(mask, width, height, ax, ay, bx, by, stroke.radius, value);
    [ax, ay] = [bx, by];
  }
}
