// Prompt -> mask decoding, on the server (POST /api/images/{id}/decode/) or in the browser
// (the model version's ONNX decoder run by onnxruntime-web against the stored embedding).
//
// Both return the same shape: {multimask, candidates: [{score, ...}]}, where each candidate
// knows how to feed itself back as the next prompt's mask input (server: its mask_ref token;
// browser: its own 256 x 256 low-res logits) and gives its full-size mask with maskOf().
// Prompts are in original-image pixels: {points: [[x, y]], labels: [1 | 0], box: [x0, y0,
// x1, y1] | null}.

import { api, fetchBytes } from "./api.js";
import { decodeMask } from "./rle.js";

const LOW_RES = 256;

/** SAM's ambiguity rule: three candidates for a single point without a box, else one. */
export function wantsMultimask(prompt) {
  return prompt.points.length === 1 && !prompt.box;
}

/** The full-size (H*W, row-major) mask of a candidate, computed once. */
export function maskOf(candidate) {
  if (!candidate.mask) candidate.mask = candidate.computeMask();
  return candidate.mask;
}

export class ServerDecoder {
  constructor({ imageId, versionId, width, height }) {
    this.path = "server";
    this.imageId = imageId;
    this.versionId = versionId;
    this.width = width;
    this.height = height;
  }

  async decode(prompt, previous = null) {
    const { data } = await api("POST", `/api/images/${this.imageId}/decode/`, {
      model_version: this.versionId,
      points: prompt.points,
      labels: prompt.labels,
      box: prompt.box,
      mask_ref: previous ? previous.maskRef : null,
      multimask: null,
      format: "rle",
    });
    return {
      multimask: data.multimask,
      candidates: data.masks.map((item) => ({
        score: item.score,
        maskRef: item.mask_ref,
        mask: null,
        computeMask: () => decodeMask(item.rle),
      })),
    };
  }
}

// --- browser side ----------------------------------------------------------------------------

let ortPromise = null;
const sessions = new Map(); // model version id -> Promise<InferenceSession>

/** onnxruntime-web (the wasm build), imported once from the site's own static files. */
export function loadOrt(ortUrl, wasmBase) {
  if (!ortPromise) {
    ortPromise = import(ortUrl).then((ort) => {
      ort.env.wasm.wasmPaths = wasmBase;
      // Threads need SharedArrayBuffer, which needs the page's COOP/COEP isolation.
      ort.env.wasm.numThreads = self.crossOriginIsolated
        ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1))
        : 1;
      return ort;
    });
    ortPromise.catch(() => {
      ortPromise = null;
    });
  }
  return ortPromise;
}

async function sessionFor(ort, version) {
  if (!sessions.has(version.id)) {
    const created = fetchBytes(version.onnx_url).then((bytes) =>
      ort.InferenceSession.create(new Uint8Array(bytes), {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      }),
    );
    created.catch(() => sessions.delete(version.id));
    sessions.set(version.id, created);
  }
  return sessions.get(version.id);
}

/**
 * Bilinear resize of h x w logits to H x W, then threshold > 0: torch's
 * interpolate(mode="bilinear", align_corners=False), the last step of SAM's postprocessing,
 * in the same order (along x first, then y), so the masks match the server's.
 */
export function upscaleMask(logits, h, w, H, W) {
  const mask = new Uint8Array(H * W);
  if (h === H && w === W) {
    for (let i = 0; i < mask.length; i++) mask[i] = logits[i] > 0 ? 1 : 0;
    return mask;
  }
  const axis = (inSize, outSize) => {
    const scale = inSize / outSize;
    const lo = new Int32Array(outSize);
    const hi = new Int32Array(outSize);
    const weight = new Float32Array(outSize);
    for (let o = 0; o < outSize; o++) {
      let real = scale * (o + 0.5) - 0.5;
      if (real < 0) real = 0;
      const i0 = Math.floor(real);
      lo[o] = i0;
      hi[o] = i0 < inSize - 1 ? i0 + 1 : i0;
      weight[o] = real - i0;
    }
    return { lo, hi, weight };
  };
  const xs = axis(w, W);
  const ys = axis(h, H);
  const rows = new Float32Array(h * W); // every input row resized along x
  for (let y = 0; y < h; y++) {
    const base = y * w;
    const out = y * W;
    for (let x = 0; x < W; x++) {
      const l1 = xs.weight[x];
      rows[out + x] = (1 - l1) * logits[base + xs.lo[x]] + l1 * logits[base + xs.hi[x]];
    }
  }
  for (let y = 0; y < H; y++) {
    const l1 = ys.weight[y];
    const l0 = 1 - l1;
    const r0 = ys.lo[y] * W;
    const r1 = ys.hi[y] * W;
    const out = y * W;
    for (let x = 0; x < W; x++) {
      mask[out + x] = l0 * rows[r0 + x] + l1 * rows[r1 + x] > 0 ? 1 : 0;
    }
  }
  return mask;
}

export class BrowserDecoder {
  /** Load the runtime, the version's decoder and the image embedding; throws when it can't. */
  static async create({ ortUrl, wasmBase, version, embedding }) {
    if (typeof WebAssembly !== "object") throw new Error("this browser has no WebAssembly");
    const ort = await loadOrt(ortUrl, wasmBase);
    const [session, bytes] = await Promise.all([
      sessionFor(ort, version),
      fetchBytes(embedding.embedding_url),
    ]);
    const values = new Float32Array(bytes);
    const expected = embedding.shape.reduce((a, b) => a * b, 1);
    if (values.length !== expected) {
      throw new Error(`embedding has ${values.length} values, shape ${embedding.shape} needs ${expected}`);
    }
    return new BrowserDecoder(ort, session, values, embedding);
  }

  constructor(ort, session, values, embedding) {
    this.path = "browser";
    this.ort = ort;
    this.session = session;
    this.embedding = new ort.Tensor("float32", values, embedding.shape);
    [this.height, this.width] = embedding.original_size;
    [this.inputHeight, this.inputWidth] = embedding.input_size;
    this.threads = ort.env.wasm.numThreads;
    this.noMask = new Float32Array(LOW_RES * LOW_RES);
  }

  /** Prompt -> the decoder's inputs, coordinates in the 1024 frame (ResizeLongestSide). */
  feeds(prompt, previous) {
    const { ort } = this;
    const sx = this.inputWidth / this.width;
    const sy = this.inputHeight / this.height;
    const coords = [];
    const labels = [];
    prompt.points.forEach(([x, y], i) => {
      coords.push(x * sx, y * sy);
      labels.push(prompt.labels[i]);
    });
    if (prompt.box) {
      const [x0, y0, x1, y1] = prompt.box;
      coords.push(x0 * sx, y0 * sy, x1 * sx, y1 * sy);
      labels.push(2, 3);
    } else {
      coords.push(0, 0); // SAM's padding point: without a box, one "not a point" is appended
      labels.push(-1);
    }
    const n = labels.length;
    return {
      image_embeddings: this.embedding,
      point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, n]),
      mask_input: new ort.Tensor("float32", previous ? previous.lowRes : this.noMask, [1, 1, LOW_RES, LOW_RES]),
      has_mask_input: new ort.Tensor("float32", new Float32Array([previous ? 1 : 0]), [1]),
      // Asking for the resized size returns the logits cropped in the 1024 frame; the last
      // resize to the original size is done per candidate, only when it is shown.
      orig_im_size: new ort.Tensor("float32", new Float32Array([this.inputHeight, this.inputWidth]), [2]),
    };
  }

  async decode(prompt, previous = null) {
    const out = await this.session.run(this.feeds(prompt, previous));
    const multimask = wantsMultimask(prompt);
    const tokens = multimask ? [1, 2, 3] : [0]; // token 0 is the single-mask output
    const h = this.inputHeight;
    const w = this.inputWidth;
    const plane = h * w;
    const lowPlane = LOW_RES * LOW_RES;
    const { width: W, height: H } = this;
    const candidates = tokens.map((token) => {
      const logits = out.masks.data.slice(token * plane, (token + 1) * plane);
      return {
        score: out.iou_predictions.data[token],
        lowRes: out.low_res_masks.data.slice(token * lowPlane, (token + 1) * lowPlane),
        mask: null,
        computeMask: () => upscaleMask(logits, h, w, H, W),
      };
    });
    for (const tensor of Object.values(out)) tensor.dispose?.();
    return { multimask, candidates };
  }
}
