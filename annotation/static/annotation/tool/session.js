// The tool's conversation with the server about images: leases, the next image, the
// embedding's readiness, accepted masks. Every call is one endpoint of the REST API.

import { api, ApiError } from "./api.js";

/** The next image needing work, leased to this user: {image, lease} or null (204). */
export async function nextImage(projectId, skip = []) {
  const { status, data } = await api("POST", `/api/projects/${projectId}/next-image/`, { skip });
  return status === 204 || !data ? null : data;
}

/** A named image, with a lease taken on it: {image, lease, leaseError}. */
export async function openImage(imageId) {
  const { data: image } = await api("GET", `/api/images/${imageId}/`);
  try {
    const { data: lease } = await api("POST", `/api/images/${imageId}/lease/`);
    return { image, lease, leaseError: null };
  } catch (error) {
    if (error instanceof ApiError && error.code === "lease_taken") {
      return { image, lease: null, leaseError: error };
    }
    throw error;
  }
}

/**
 * A lease_taken answer as a sentence, its time in the browser's locale and time zone ("Image #3
 * is being annotated by carol until 14:05."); the date is added when it is not today.
 */
export function leaseTakenText(error, imageId, now = new Date()) {
  const { holder, expires_at: expiresAt } = error.body || {};
  const until = new Date(expiresAt);
  if (!holder || Number.isNaN(until.getTime())) return `${error.message}.`;
  const today = until.toDateString() === now.toDateString();
  const when = until.toLocaleString([], { dateStyle: today ? undefined : "medium", timeStyle: "short" });
  return `Image #${imageId} is being annotated by ${holder} until ${when}.`;
}

export async function renewLease(imageId) {
  const { data } = await api("POST", `/api/images/${imageId}/lease/`);
  return data;
}

/** Give the lease back when the page goes away (keepalive: survives the unload). */
export function releaseLease(imageId) {
  return api("DELETE", `/api/images/${imageId}/lease/`, undefined, { keepalive: true }).catch(() => null);
}

export async function markDone(imageId) {
  const { data } = await api("POST", `/api/images/${imageId}/done/`);
  return data;
}

/** Embedding state: {status: "ready"|"queued", ...}; 409s (gone, none deployed) throw. */
export async function embeddingState(imageId, versionId) {
  const query = versionId ? `?model_version=${versionId}` : "";
  const { data } = await api("GET", `/api/images/${imageId}/embedding/${query}`);
  return data;
}

/** The project's live model version: {deployed_version: {id, name, arch, onnx_url} | null}. */
export async function deployedVersion(projectId) {
  const { data } = await api("GET", `/api/projects/${projectId}/deployed-version/`);
  return data;
}

/** Every accepted mask of an image (following the pagination). */
export async function acceptedMasks(imageId) {
  return listMasks(`/api/images/${imageId}/masks/?limit=500`);
}

/**
 * The image's masks a reviewer rejected that this user may fix: their own, or every
 * annotator's for reviewers and admins (prefilled masks rejected in the tool are not feedback).
 */
export async function sentBackMasks(imageId, userId, anyAnnotator) {
  const mine = anyAnnotator ? "" : `&annotator=${userId}`;
  const masks = await listMasks(`/api/images/${imageId}/masks/?limit=500&status=rejected${mine}`);
  return masks.filter((mask) => mask.source !== "prefill");
}

/** The image's prefilled masks still proposed (semi-automatic stage): shown as done. */
export async function proposedPrefill(imageId) {
  return listMasks(`/api/images/${imageId}/masks/?limit=500&status=proposed&source=prefill`);
}

/** Reject a wrong prefilled mask; restore undoes it. Both return the mask. */
export async function rejectPrefill(maskId) {
  const { data } = await api("POST", `/api/masks/${maskId}/prefill-reject/`);
  return data;
}

export async function restorePrefill(maskId) {
  const { data } = await api("POST", `/api/masks/${maskId}/prefill-restore/`);
  return data;
}

async function listMasks(first) {
  const masks = [];
  let url = first;
  while (url) {
    const { data } = await api("GET", url);
    const page = Array.isArray(data) ? data : data.results;
    masks.push(...page);
    url = Array.isArray(data) ? null : data.next;
  }
  return masks;
}

export async function storeMask(imageId, body) {
  const { data } = await api("POST", `/api/images/${imageId}/masks/`, body);
  return data;
}

/** New pixels for an accepted mask, with the edit's clicks, strokes and seconds. */
export async function editMask(maskId, body) {
  const { data } = await api("PATCH", `/api/masks/${maskId}/`, body);
  return data;
}

export async function deleteMask(maskId) {
  await api("DELETE", `/api/masks/${maskId}/`);
}

/** Set the image aside as unusable, with a reason (it leaves the queue). */
export async function skipImage(imageId, reason) {
  const { data } = await api("POST", `/api/images/${imageId}/skip/`, { reason });
  return data;
}
