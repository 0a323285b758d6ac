// Categories: a project's optional class labels of masks (GET /api/projects/{id}/categories/).
//
// A project without any (the default: SAM's masks are class-agnostic) gets no Category block,
// and its accepts send no category. With some, the block's select names the category the next
// accepted masks get. The choice is sticky: it stays for the next masks and images, and is
// remembered per project in localStorage (a remembered category that no longer exists is
// ignored). C cycles through the categories and "(none)"; L puts the focus on the list, to pick
// one by typing. While an accepted mask is in the
// editor, the select shows and changes that mask's category instead; the change is saved with
// the edit (edit.js), and leaving the editor shows the sticky choice again.

import { api, ApiError } from "./api.js";
import * as session from "./session.js";

function storageKey(projectId) {
  return `maskloop.category.${projectId}`;
}

function remembered(projectId) {
  try {
    const id = Number(window.localStorage.getItem(storageKey(projectId)));
    return Number.isInteger(id) && id > 0 ? id : null;
  } catch {
    return null; // storage blocked: start with none
  }
}

function remember(projectId, categoryId) {
  try {
    window.localStorage.setItem(storageKey(projectId), categoryId === null ? "" : String(categoryId));
  } catch {
    // private mode or full: the choice lasts as long as the page
  }
}

/** Start-up: the select's events, then the project's categories (awaited by accept). */
export function bindCategories(tool) {
  tool.categories = []; // [{id, name, color}] in COCO id order
  tool.category = null; // the sticky choice: a category id, or null for none
  tool.categoryNote = "";
  const select = tool.$("#category-select");
  select.addEventListener("change", () => {
    chooseCategory(tool, select.value === "" ? null : Number(select.value));
    tool.canvas.focus(); // a focused select swallows the shortcuts (Enter, C): hand them back
  });
  select.addEventListener("keydown", (event) => {
    if (event.key === "Escape" || event.key === "Enter") {
      event.preventDefault();
      tool.canvas.focus(); // back to the image (L brought the focus here)
    }
  });
  tool.categoriesLoaded = loadCategories(tool, select);
}

/** L: the focus to the category list, to pick one by typing its first letters (many
 * categories are slow to reach with C). Enter or Esc goes back to the image. */
export function focusCategory(tool) {
  if (!tool.categories.length) {
    tool.say("This project has no categories: masks are stored without one.");
    return;
  }
  tool.$("#category-select").focus();
  tool.say("Type a category's first letters to pick it; Enter or Esc goes back to the image.");
}

async function loadCategories(tool, select) {
  let rows;
  try {
    ({ data: rows } = await api("GET", `/api/projects/${tool.projectId}/categories/`));
  } catch (error) {
    tool.categoryNote = `The categories could not be loaded (${error.message}): masks are stored without one. Reload the page to try again.`;
    tool.updatePanel();
    return;
  }
  tool.categories = rows.map(({ id, name, color }) => ({ id, name, color }));
  const none = new Option("(none)", "");
  select.replaceChildren(none, ...tool.categories.map((category) => new Option(category.name, String(category.id))));
  const kept = remembered(tool.projectId);
  tool.category = categoryById(tool, kept) ? kept : null;
  tool.updatePanel();
}

export function categoryById(tool, id) {
  if (id === null || id === undefined) return null;
  return tool.categories.find((category) => category.id === id) || null;
}

/** A mask's category colour as [r, g, b] (how its overlay is drawn), or null. */
export function categoryRgb(tool, id) {
  const category = categoryById(tool, id);
  if (!category || !/^#[0-9a-f]{6}$/i.test(category.color)) return null;
  return [1, 3, 5].map((start) => parseInt(category.color.slice(start, start + 2), 16));
}

/** The name of a mask's category, or null (none, or one this page does not know). */
export function categoryName(tool, id) {
  const category = categoryById(tool, id);
  return category ? category.name : null;
}

/** What the select shows: the category of the mask in the editor, else the sticky choice. */
export function shownCategory(tool) {
  const editing = tool.work.editing;
  return editing ? editing.category : tool.category;
}

/** The select or C: the edited mask's new category, or else the sticky choice. */
export function chooseCategory(tool, id) {
  const editing = tool.work.editing;
  if (editing) {
    editing.category = id;
  } else {
    tool.category = id;
    remember(tool.projectId, id);
  }
  tool.updatePanel();
}

/** C: the next category, wrapping through "(none)". */
export function cycleCategory(tool) {
  if (!tool.categories.length) {
    tool.say("This project has no categories: masks are stored without one.");
    return;
  }
  const ids = [null, ...tool.categories.map((category) => category.id)];
  const next = ids[(ids.indexOf(shownCategory(tool)) + 1) % ids.length];
  chooseCategory(tool, next);
  const name = categoryName(tool, next) || "(none)";
  const editing = tool.work.editing;
  tool.say(editing ? `Mask #${editing.maskId} gets category ${name} when you save it (Enter).` : `Category: ${name}, for the next masks.`);
}

/** The accept's category field: {category: id | null} where the project has categories. */
export function acceptCategory(tool) {
  return tool.categories.length ? { category: tool.category } : {};
}

/** The edit's category field: {category: id} when the editor's differs from the mask's, else null. */
export function relabelOf(tool, item) {
  const editing = tool.work.editing;
  if (!editing || editing.category === item.category) return null;
  return { category: editing.category };
}

/** The panel's Category block and #tool[data-category] (the id the select shows, or ""). */
export function renderCategory(tool) {
  const shown = shownCategory(tool);
  tool.root.dataset.category = shown === null ? "" : String(shown);
  tool.$("#category-block").hidden = tool.categories.length === 0 && !tool.categoryNote;
  const select = tool.$("#category-select");
  select.disabled = tool.categories.length === 0;
  select.value = shown === null ? "" : String(shown);
  const category = categoryById(tool, shown);
  const swatch = tool.$("#category-swatch");
  swatch.style.background = category ? category.color : "";
  swatch.classList.toggle("none", !category);
  swatch.title = category ? `${category.name} (${category.color})` : "no category";
  const editing = tool.work.editing;
  tool.$("#category-note").textContent =
    tool.categoryNote || (editing ? `Of mask #${editing.maskId} in the editor: a change is saved with Enter.` : "Given to the masks you accept next.");
}

/** A row's select (the accepted masks' list): one the user may relabel and not in the editor. */
export function rowCategorySelect(tool, item) {
  if (!tool.categories.length || !(item.prefill || tool.mayEdit(item)) || item.id === tool.editingId()) return [];
  const select = document.createElement("select");
  select.className = "row-category";
  select.setAttribute("aria-label", `Category of mask #${item.id}`);
  select.title = "Relabel this mask (saved at once; Ctrl+Z undoes it)";
  select.append(new Option("(none)", ""), ...tool.categories.map((category) => new Option(category.name, String(category.id))));
  select.value = item.category === null ? "" : String(item.category);
  select.addEventListener("change", () => {
    relabel(tool, item, select.value === "" ? null : Number(select.value));
    tool.canvas.focus(); // give the shortcuts back
  });
  return [select];
}

/** Save a mask's new category alone (PATCH); Ctrl+Z stores the one before again. */
async function relabel(tool, item, id) {
  const before = item.category;
  try {
    tool.replaceAccepted(await session.editMask(item.id, { category: id }));
    tool.history.push({ type: "relabel", maskId: item.id, before });
    tool.say(`Mask #${item.id} is now ${categoryName(tool, id) || "without a category"}.`, "ok");
  } catch (error) {
    tool.say(`Not relabelled: ${error.message}`, "error");
  }
  tool.updatePanel();
  tool.requestFrame();
}

/** Ctrl+Z over a relabel from a row. */
export async function undoRelabel(tool, action) {
  try {
    tool.replaceAccepted(await session.editMask(action.maskId, { category: action.before }));
    tool.say(`Mask #${action.maskId} has its category back.`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      tool.say(`Mask #${action.maskId} no longer exists.`, "warn");
    } else {
      tool.history.push(action);
      tool.say(`Undo failed: ${error.message}`, "error");
    }
  }
  tool.updatePanel();
  tool.requestFrame();
}
