// The tool's undo stack: entries {type: "prompt" | "stroke" | "clear" | "accept" | "reject"}.
//
// Prompt and stroke entries belong to the work in progress; a clear or an accept entry holds
// the work it ended, so undoing it makes that work current again and the entries below it
// apply to it. Reject entries (prefilled masks) touch no work.

/**
 * The stack without a deleted accepted mask: its accept entry goes, and so do the prompt,
 * stroke and clear entries of the work that led to it (back to the accept before it). Left in,
 * they would apply to whatever work is current when undone. Reject entries stay.
 */
export function historyWithoutMask(history, maskId) {
  const at = history.findIndex((action) => action.type === "accept" && action.maskId === maskId);
  if (at < 0) return history;
  let start = at;
  while (start > 0 && history[start - 1].type !== "accept") start -= 1;
  const rejections = history.slice(start, at).filter((action) => action.type === "reject");
  return [...history.slice(0, start), ...rejections, ...history.slice(at + 1)];
}
