// SAM's mask postprocessing in the browser: a candidate's 256 x 256 low-res logits -> its
// binary mask at the original image size, computed only for the candidate that is shown.
//
// The server (Sam.postprocess_masks) resizes the logits bilinearly to the 1024 frame, crops the
// resized image's part (input_size) and resizes that to the original size, then thresholds > 0
// (torch's interpolate, align_corners=False). Both resizes are linear and separable, so along
// each axis they compose into one map in which every output pixel reads 3 consecutive low-res
// logits. An output pixel whose 3 x 3 low-res neighbourhood holds no positive logit cannot be
// foreground (the weights are >= 0), so only the rectangle around the positive logits is
// computed: the cost follows the object, not the image.

export const LOW_RES = 256; // the decoder's mask grid (and mask_input size)
export const FRAME = 1024; // the model's square input frame (4 x LOW_RES)
const TAPS = 3;

/** One torch bilinear resize along an axis: output o reads lo[o], hi[o] weighted 1 - t, t. */
function bilinearAxis(inSize, outSize) {
  const scale = inSize / outSize;
  const lo = new Int32Array(outSize);
  const hi = new Int32Array(outSize);
  const t = new Float64Array(outSize);
  for (let o = 0; o < outSize; o++) {
    let real = scale * (o + 0.5) - 0.5;
    if (real < 0) real = 0;
    const i0 = Math.floor(real);
    lo[o] = i0;
    hi[o] = i0 < inSize - 1 ? i0 + 1 : i0;
    t[o] = real - i0;
  }
  return { lo, hi, t };
}

/**
 * LOW_RES -> FRAME, keep the first `cropped`, -> `original`, as one map: output o is
 * sum over k < 3 of weights[3 o + k] * logits[start[o] + k].
 */
export function composedAxis(cropped, original) {
  const first = bilinearAxis(LOW_RES, FRAME);
  const second = bilinearAxis(cropped, original);
  const start = new Int32Array(original);
  const weights = new Float64Array(original * TAPS);
  for (let o = 0; o < original; o++) {
    const s = Math.min(first.lo[second.lo[o]], LOW_RES - TAPS);
    start[o] = s;
    const add = (frameIndex, weight) => {
      const lowWeight = 1 - first.t[frameIndex];
      const k0 = first.lo[frameIndex] - s;
      const k1 = first.hi[frameIndex] - s;
      if (k0 < 0 || k1 >= TAPS) throw new Error(`mask resize: tap ${k0}..${k1} outside 0..${TAPS - 1}`);
      weights[o * TAPS + k0] += weight * lowWeight;
      weights[o * TAPS + k1] += weight * first.t[frameIndex];
    };
    add(second.lo[o], 1 - second.t[o]);
    add(second.hi[o], second.t[o]);
  }
  return { start, weights };
}

/** First and last output index whose taps reach low-res [from, to] (or null: none). */
function reach(axis, from, to) {
  const { start } = axis;
  let a = 0;
  while (a < start.length && start[a] + TAPS - 1 < from) a++;
  let b = start.length - 1;
  while (b >= a && start[b] > to) b--;
  return a <= b ? [a, b] : null;
}

/** Resizes low-res logits of one image (fixed input and original size) to binary masks. */
export class MaskUpscaler {
  /** inputSize: [h, w] of the image resized into the frame; originalSize: [H, W]. */
  constructor(inputSize, originalSize) {
    [this.height, this.width] = originalSize;
    this.ys = composedAxis(inputSize[0], this.height);
    this.xs = composedAxis(inputSize[1], this.width);
    this.rows = new Float32Array(0); // scratch: low-res rows resized along x
  }

  /** Row-major H x W Uint8Array (1 = foreground) from LOW_RES x LOW_RES logits. */
  mask(logits) {
    const { width: W, height: H, xs, ys } = this;
    const mask = new Uint8Array(W * H);
    let lx0 = LOW_RES;
    let ly0 = LOW_RES;
    let lx1 = -1;
    let ly1 = -1;
    for (let y = 0; y < LOW_RES; y++) {
      const row = y * LOW_RES;
      for (let x = 0; x < LOW_RES; x++) {
        if (logits[row + x] > 0) {
          if (x < lx0) lx0 = x;
          if (x > lx1) lx1 = x;
          if (y < ly0) ly0 = y;
          ly1 = y;
        }
      }
    }
    if (lx1 < 0) return mask;
    const xr = reach(xs, lx0, lx1);
    const yr = reach(ys, ly0, ly1);
    if (!xr || !yr) return mask;
    const [x0, x1] = xr;
    const [y0, y1] = yr;
    const nx = x1 - x0 + 1;
    const r0 = ys.start[y0];
    const r1 = ys.start[y1] + TAPS - 1;
    if (this.rows.length < (r1 - r0 + 1) * nx) this.rows = new Float32Array((r1 - r0 + 1) * nx);
    const rows = this.rows;
    const xStart = xs.start;
    const xw = xs.weights;
    for (let r = r0; r <= r1; r++) {
      const src = r * LOW_RES;
      const out = (r - r0) * nx - x0;
      for (let x = x0; x <= x1; x++) {
        const i = src + xStart[x];
        const k = x * TAPS;
        rows[out + x] = xw[k] * logits[i] + xw[k + 1] * logits[i + 1] + xw[k + 2] * logits[i + 2];
      }
    }
    const yStart = ys.start;
    const yw = ys.weights;
    for (let y = y0; y <= y1; y++) {
      const k = y * TAPS;
      const w0 = yw[k];
      const w1 = yw[k + 1];
      const w2 = yw[k + 2];
      const a = (yStart[y] - r0) * nx - x0;
      const b = a + nx;
      const c = b + nx;
      const out = y * W;
      for (let x = x0; x <= x1; x++) {
        if (w0 * rows[a + x] + w1 * rows[b + x] + w2 * rows[c + x] > 0) mask[out + x] = 1;
      }
    }
    return mask;
  }
}
