// Binary masks (Uint8Array, row-major H*W) and their pictures: bounding boxes, coloured
// bitmaps cropped to the box, brush/eraser painting, hit tests.

export const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
  [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
];

/** The mask's bytes as 32-bit words (4 pixels each) where its offset allows, else null:
 *  zero words are skipped four pixels at a time. */
function wordView(mask) {
  return mask.byteOffset % 4 === 0 ? new Uint32Array(mask.buffer, mask.byteOffset, mask.length >> 2) : null;
}

/** Index of the first set pixel, or -1. */
function firstSet(mask) {
  const words = wordView(mask);
  let i = 0;
  if (words) {
    let w = 0;
    while (w < words.length && words[w] === 0) w++;
    i = w * 4;
  }
  for (; i < mask.length; i++) if (mask[i]) return i;
  return -1;
}

/** Index of the last set pixel, or -1. */
function lastSet(mask) {
  const words = wordView(mask);
  let i = mask.length - 1;
  if (words) {
    for (; i >= words.length * 4; i--) if (mask[i]) return i; // the bytes after the last word
    let w = words.length - 1;
    while (w >= 0 && words[w] === 0) w--;
    i = w * 4 + 3;
  }
  for (; i >= 0; i--) if (mask[i]) return i;
  return -1;
}

/** [x0, y0, x1, y1] (inclusive) of the set pixels, or null for an empty mask.
 *  On the click path for every new mask: the first and last set pixels give the rows, skipping
 *  empty space a word at a time; then each row in between is read only from its ends up to the
 *  columns found so far (a whole-image scan took ~1.8 ms at 1500 x 1000). */
export function maskBox(mask, width, height) {
  const pixels = mask.subarray(0, width * height);
  const first = firstSet(pixels);
  if (first < 0) return null;
  const y0 = Math.floor(first / width);
  const y1 = Math.floor(lastSet(pixels) / width);
  let x0 = width;
  let x1 = -1;
  for (let y = y0; y <= y1; y++) {
    const row = y * width;
    for (let x = 0; x < x0; x++) {
      if (mask[row + x]) {
        x0 = x;
        break;
      }
    }
    for (let x = width - 1; x > x1; x--) {
      if (mask[row + x]) {
        x1 = x;
        break;
      }
    }
  }
  return [x0, y0, x1, y1];
}

/** Number of set pixels of `mask`, read within `box` (maskBox's of this mask; null: empty). */
export function maskArea(mask, width, box) {
  if (!box) return 0;
  const [x0, y0, x1, y1] = box;
  let area = 0;
  for (let y = y0; y <= y1; y++) {
    const end = y * width + x1;
    for (let i = y * width + x0; i <= end; i++) area += mask[i];
  }
  return area;
}

// Prefilled (proposed) masks: a white edge and diagonal hatching, so that they read as the
// model's suggestion, distinct from the masks people accepted.
export const PREFILL_STYLE = { edge: [255, 255, 255], hatch: 6 };
const UNCOVERED_RGBA = [255, 0, 200, 150];

/** An opaque [r, g, b] as one RGBA pixel word of ImageData (in this machine's byte order). */
function pixelWord(rgb) {
  return new Uint32Array(Uint8ClampedArray.of(rgb[0], rgb[1], rgb[2], 255).buffer)[0];
}

/** Write a rectangle of the mask as coloured pixels into a canvas (dirty-rect updates).
 *  `hatch` (a period in pixels): every other diagonal band of the inside is left clear.
 *  Pixels are written as 32-bit words: one store instead of four on the click path. */
export function paintRect(ctx, mask, width, rect, color, edgeColor = null, hatch = 0) {
  const [x0, y0, x1, y1] = rect;
  const w = x1 - x0 + 1;
  const h = y1 - y0 + 1;
  if (w <= 0 || h <= 0) return;
  const image = ctx.createImageData(w, h);
  const words = new Uint32Array(image.data.buffer);
  const fill = pixelWord(color);
  const height = mask.length / width;
  if (!edgeColor) {
    for (let y = 0; y < h; y++) {
      const row = (y0 + y) * width + x0;
      const out = y * w;
      for (let x = 0; x < w; x++) if (mask[row + x]) words[out + x] = fill;
    }
    ctx.putImageData(image, x0, y0);
    return;
  }
  const edgeFill = pixelWord(edgeColor);
  for (let y = 0; y < h; y++) {
    const row = (y0 + y) * width;
    for (let x = 0; x < w; x++) {
      const index = row + x0 + x;
      if (!mask[index]) continue;
      const gx = x0 + x;
      const gy = y0 + y;
      const edge =
        gx === 0 || gy === 0 || gx === width - 1 || gy === height - 1 ||
        !mask[index - 1] || !mask[index + 1] || !mask[index - width] || !mask[index + width];
      if (!edge && hatch && Math.floor((gx + gy) / hatch) % 2 === 1) continue;
      words[y * w + x] = edge ? edgeFill : fill;
    }
  }
  ctx.putImageData(image, x0, y0);
}

/** A mask as a coloured bitmap cropped to its box: {canvas, box, crop} or null when empty.
 *  `style` ({edge, hatch}, e.g. PREFILL_STYLE) replaces the default darker edge. */
export function maskBitmap(mask, width, height, color, style = null) {
  const box = maskBox(mask, width, height);
  if (!box) return null;
  const [x0, y0, x1, y1] = box;
  const w = x1 - x0 + 1;
  const h = y1 - y0 + 1;
  const crop = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) crop.set(mask.subarray((y0 + y) * width + x0, (y0 + y) * width + x1 + 1), y * w);
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const edge = style ? style.edge : color.map((c) => Math.min(255, Math.round(c * 0.55)));
  paintRect(canvas.getContext("2d"), crop, w, [0, 0, w - 1, h - 1], color, edge, style ? style.hatch : 0);
  return { canvas, box, crop, cropWidth: w };
}

/**
 * Paint the pixels no mask of `bitmaps` covers into `canvas` (width x height, magenta, the
 * rest transparent); returns how many there are. "What is still to annotate" at a glance.
 */
export function paintUncovered(canvas, bitmaps, width, height) {
  const covered = new Uint8Array(width * height);
  for (const bitmap of bitmaps) {
    if (!bitmap) continue;
    const [x0, y0, x1, y1] = bitmap.box;
    for (let y = y0; y <= y1; y++) {
      const src = (y - y0) * bitmap.cropWidth;
      const dst = y * width + x0;
      for (let x = 0; x <= x1 - x0; x++) if (bitmap.crop[src + x]) covered[dst + x] = 1;
    }
  }
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  let uncovered = 0;
  for (let i = 0; i < covered.length; i++) {
    if (covered[i]) continue;
    uncovered += 1;
    image.data.set(UNCOVERED_RGBA, i * 4);
  }
  ctx.putImageData(image, 0, 0);
  return uncovered;
}

/** Does a cropped mask ({box, crop, cropWidth}) cover image pixel (x, y)? */
export function bitmapHit(bitmap, x, y) {
  const [x0, y0, x1, y1] = bitmap.box;
  if (x < x0 || x > x1 || y < y0 || y > y1) return false;
  return bitmap.crop[(y - y0) * bitmap.cropWidth + (x - x0)] === 1;
}

/**
 * Paint a round brush along the segment (ax, ay) -> (bx, by) with value 1 (brush) or 0
 * (eraser); returns the touched rectangle [x0, y0, x1, y1] or null when off the image.
 */
export function paintSegment(mask, width, height, ax, ay, bx, by, radius, value) {
  const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - radius));
  const y0 = Math.max(0, Math.floor(Math.min(ay, by) - radius));
  const x1 = Math.min(width - 1, Math.ceil(Math.max(ax, bx) + radius));
  const y1 = Math.min(height - 1, Math.ceil(Math.max(ay, by) + radius));
  if (x0 > x1 || y0 > y1) return null;
  const dx = bx - ax;
  const dy = by - ay;
  const length2 = dx * dx + dy * dy;
  const r2 = radius * radius;
  for (let y = y0; y <= y1; y++) {
    const py = y + 0.5;
    for (let x = x0; x <= x1; x++) {
      const px = x + 0.5;
      // distance from the pixel centre to the segment
      let t = length2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / length2 : 0;
      t = t < 0 ? 0 : t > 1 ? 1 : t;
      const ex = px - (ax + t * dx);
      const ey = py - (ay + t * dy);
      if (ex * ex + ey * ey <= r2) mask[y * width + x] = value;
    }
  }
  return [x0, y0, x1, y1];
}
