// Keyboard shortcuts of the tool and the review page: which key events are theirs to take.

// Inputs that take no typed text: a letter pressed while one has the focus is still a shortcut
// (after a click on a radio, a checkbox or a slider, the keys must keep working).
const KEYLESS_INPUTS = new Set(["checkbox", "radio", "range", "button", "submit", "reset", "color", "file", "image"]);

/** True when the element takes typed text, so a letter typed there is not a shortcut. */
export function typesText(target) {
  if (!(target instanceof Element)) return false;
  if (target instanceof HTMLElement && target.isContentEditable) return true;
  if (target.matches("textarea, select")) return true;
  return target instanceof HTMLInputElement && !KEYLESS_INPUTS.has(target.type);
}

/** The key a shortcut compares with: letters in lower case, so Shift and Caps Lock don't matter. */
export function shortcutKey(event) {
  return event.key.length === 1 ? event.key.toLowerCase() : event.key;
}
