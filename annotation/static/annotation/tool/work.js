// The work in progress on one mask: its prompts, strokes, provenance events, current pixels,
// counters and active-time timer; a fresh one after each accept, clear or saved edit.

import { ActiveTimer } from "./viewport.js";

export function newWork(idleCap) {
  return {
    prompts: [], // {kind: "point", x, y, label} | {kind: "box", box}; + result, selected
    strokes: [], // {mode: "brush"|"eraser", radius, points: [[x, y], ...]}
    events: [], // provenance: every prompt, stroke, pick and undo with its time offset
    mask: null,
    area: 0,
    clicks: 0,
    strokeCount: 0,
    timer: new ActiveTimer(idleCap),
    acceptKey: null,
    generation: 0,
    editing: null, // {maskId, base, counted} while an accepted mask is in the editor (edit.js)
  };
}
