// Prompt -> mask decoding, on the server (POST /api/images/{id}/decode/) or in the browser
// (the model version's ONNX decoder run by onnxruntime-web against the stored embedding).
//
// Both return the same shape: {multimask, candidates: [{score, ...}]}, where each candidate
// knows how to feed itself back as the next prompt's mask input (server: its mask_ref token;
// browser: its own 256 x 256 low-res logits) and gives its full-size mask with maskOf().
// The browser runs the version's low-res decoder variant (GET .../onnx/?variant=low_res: no
// orig_im_size, outputs iou_predictions + low_res_masks) and resizes only the candidate that
// is shown (upscale.js), as the server's postprocessing does.
// Prompts are in original-image pixels: {points: [[x, y]], labels: [1 | 0], box: [x0, y0,
// x1, y1] | null}.

import { api, fetchBytes } from "./api.js";
import { decodeMask } from "./rle.js";
import { LOW_RES, MaskUpscaler } from "./upscale.js";

/** The index of the candidate with the highest predicted IoU (the one shown first). */
export function bestIndex(candidates) {
  let best = 0;
  candidates.forEach((c, i) => {
    if (c.score > candidates[best].score) best = i;
  });
  return best;
}

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

/** The low-res variant of the version's decoder: no full-size masks computed in the graph. */
export function lowResUrl(onnxUrl) {
  const url = new URL(onnxUrl, window.location.href);
  url.searchParams.set("variant", "low_res");
  return url.pathname + url.search;
}

async function sessionFor(ort, version) {
  if (!sessions.has(version.id)) {
    const created = fetchBytes(lowResUrl(version.onnx_url)).then((bytes) =>
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
    const decoder = new BrowserDecoder(ort, session, values, embedding);
    await decoder.warmUp();
    return decoder;
  }

  constructor(ort, session, values, embedding) {
    this.path = "browser";
    this.ort = ort;
    this.session = session;
    [this.height, this.width] = embedding.original_size;
    [this.inputHeight, this.inputWidth] = embedding.input_size;
    this.threads = ort.env.wasm.numThreads;
    // Made once per image and reused by every click: the embedding (4 MiB for vit_b), the
    // empty mask input and the has_mask_input flags.
    this.embedding = new ort.Tensor("float32", values, embedding.shape);
    this.noMask = new ort.Tensor("float32", new Float32Array(LOW_RES * LOW_RES), [1, 1, LOW_RES, LOW_RES]);
    this.hasMask = new ort.Tensor("float32", new Float32Array([1]), [1]);
    this.hasNoMask = new ort.Tensor("float32", new Float32Array([0]), [1]);
    this.upscaler = new MaskUpscaler(embedding.input_size, embedding.original_size);
  }

  /** One run on a throw-away prompt, so that the first real click does not pay first-run costs. */
  async warmUp() {
    const prompt = { points: [[this.width / 2, this.height / 2]], labels: [1], box: null };
    const result = await this.decode(prompt);
    maskOf(result.candidates[0]);
  }

  /** Prompt -> the decoder's inputs, coordinates in the 1024 frame (ResizeLongestSide). */
  feeds(prompt, previous) {
    const { ort } = this;
    const sx = this.inputWidth / this.width;
    const sy = this.inputHeight / this.height;
    const count = prompt.points.length;
    const n = count + (prompt.box ? 2 : 1);
    const coords = new Float32Array(2 * n);
    const labels = new Float32Array(n);
    prompt.points.forEach(([x, y], i) => {
      coords[2 * i] = x * sx;
      coords[2 * i + 1] = y * sy;
      labels[i] = prompt.labels[i];
    });
    if (prompt.box) {
      const [x0, y0, x1, y1] = prompt.box;
      coords.set([x0 * sx, y0 * sy, x1 * sx, y1 * sy], 2 * count);
      labels.set([2, 3], count);
    } else {
      labels[count] = -1; // SAM's padding point (0, 0): without a box, one "not a point" is appended
    }
    return {
      image_embeddings: this.embedding,
      point_coords: new ort.Tensor("float32", coords, [1, n, 2]),
      point_labels: new ort.Tensor("float32", labels, [1, n]),
      mask_input: previous ? new ort.Tensor("float32", previous.lowRes, [1, 1, LOW_RES, LOW_RES]) : this.noMask,
      has_mask_input: previous ? this.hasMask : this.hasNoMask,
    };
  }

  async decode(prompt, previous = null) {
    const out = await this.session.run(this.feeds(prompt, previous));
    const multimask = wantsMultimask(prompt);
    const tokens = multimask ? [1, 2, 3] : [0]; // token 0 is the single-mask output
    const plane = LOW_RES * LOW_RES;
    const candidates = tokens.map((token) => {
      const lowRes = out.low_res_masks.data.slice(token * plane, (token + 1) * plane);
      return {
        score: out.iou_predictions.data[token],
        lowRes,
        mask: null,
        // Resized to the image only when shown (SAM's postprocessing, in upscale.js).
        computeMask: () => this.upscaler.mask(lowRes),
      };
    });
    for (const tensor of Object.values(out)) tensor.dispose?.();
    return { multimask, candidates };
  }
}
