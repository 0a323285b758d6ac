// "Previous image": the images this tab opened in the project, in the order first opened, so
// that an annotator can go back to the one just finished and fix it. It opens with its masks
// (leased again); N marks it done again, and "next image" then resumes the image left behind,
// which is still leased to this annotator.

import { ApiError } from "./api.js";
import * as session from "./session.js";

const LIMIT = 200;

function storageKey(projectId) {
  return `maskloop.visited.${projectId}`;
}

function visits(projectId) {
  try {
    const ids = JSON.parse(window.sessionStorage.getItem(storageKey(projectId)) || "[]");
    return Array.isArray(ids) ? ids.filter(Number.isInteger) : [];
  } catch {
    return []; // storage blocked or garbled: start afresh
  }
}

function store(projectId, ids) {
  try {
    window.sessionStorage.setItem(storageKey(projectId), JSON.stringify(ids.slice(-LIMIT)));
  } catch {
    // private mode or full: going back is a convenience, the tool works without it
  }
}

/** Remember that this tab opened the image (once; the order is that of first opening). */
export function rememberVisit(tool, imageId) {
  const ids = visits(tool.projectId);
  if (!ids.includes(imageId)) store(tool.projectId, [...ids, imageId]);
}

/** The image opened before the current one, or null. */
export function previousImageId(tool) {
  const ids = visits(tool.projectId);
  if (!tool.image) return ids.length ? ids[ids.length - 1] : null;
  const index = ids.indexOf(tool.image.id);
  return index > 0 ? ids[index - 1] : null;
}

export async function openPrevious(tool) {
  if (tool.work.area > 0) {
    tool.say("Accept the mask in progress (Enter) or clear it (Esc) before going back.", "warn");
    return;
  }
  const target = previousImageId(tool);
  if (target === null) {
    tool.say("No earlier image in this tab.", "info");
    return;
  }
  try {
    const opened = await session.openImage(target);
    await tool.load(opened.image, opened.lease);
    const taken = opened.leaseError && session.leaseTakenText(opened.leaseError, target);
    if (taken) tool.say(`${taken} You can look, but someone else is working here.`, "warn");
    else if (opened.image.status === "done") {
      tool.say(`Back on image #${target}, done before: fix what you need, then N marks it done again.`, "info");
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      store(tool.projectId, visits(tool.projectId).filter((id) => id !== target));
      tool.say(`Image #${target} is no longer in the project.`, "warn");
      return;
    }
    tool.fail(error);
  }
}
