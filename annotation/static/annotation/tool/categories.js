// Categories: a project's optional class labels of masks (GET /api/projects/{id}/categories/).
//
// A project without any (the default: SAM's masks are class-agnostic) gets no Category block,
// and its accepts send no category. With some, the block's select names the category the next
// accepted masks get. The choice is sticky: it stays for the next masks and images, and is
// remembered per project in localStorage (a remembered category that no longer exists is
// ignored). C cycles through the categories and "(none)". While an accepted mask is in the
// editor, the select shows and changes that mask's category instead; the change is saved with
// the edit (edit.js), and leaving the editor shows the sticky choice again.

import { api } from "./api.js";

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
  tool.categoriesLoaded = loadCategories(tool, select);
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
