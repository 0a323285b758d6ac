// The tool's undo stack: entries {type: "prompt" | "stroke" | "clear" | "accept" | "edit" |
// "edit-saved" | "reject" | "relabel"}.
//
// Prompt and stroke entries belong to the work in progress; a clear, an accept or a saved edit
// holds the work it ended, so undoing it makes that work current again and the entries below
// it apply to it. An "edit" entry starts the editing of an accepted mask (undoing it leaves the
// editor). Reject entries (prefilled masks) and relabel entries (a row's category) touch no
// work.

const ENDS_WORK = new Set(["accept", "edit-saved"]);

/**
 * The stack without a deleted accepted mask: its accept and saved-edit entries go, and so do
 * the prompt, stroke, clear and edit entries of the work that led to each (back to the
 * accept or saved edit before it), and any other start of an edit of it or relabel of it. Left
 * in, they would apply to whatever work is current when undone. Reject entries and other
 * masks' relabels stay.
 */
export function historyWithoutMask(history, maskId) {
  let kept = history;
  for (;;) {
    const at = kept.findIndex((action) => ENDS_WORK.has(action.type) && action.maskId === maskId);
    if (at < 0) break;
    let start = at;
    while (start > 0 && !ENDS_WORK.has(kept[start - 1].type)) start -= 1;
    const rejections = kept.slice(start, at).filter((action) => action.type === "reject" || action.type === "relabel");
    kept = [...kept.slice(0, start), ...rejections, ...kept.slice(at + 1)];
  }
  return kept.filter((action) => !((action.type === "edit" || action.type === "relabel") && action.maskId === maskId));
}
