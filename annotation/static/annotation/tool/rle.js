// COCO run-length encoding, compatible with pycocotools' compressed "counts" strings.
//
// A COCO RLE lists run lengths over the pixels in column-major (Fortran) order, starting with
// a run of zeros (possibly empty). The compressed string stores each count as little-endian
// groups of 5 bits, one printable character per group (value + 48): bit 0x20 says "another
// group follows", and the top bit of the last group is the sign. From the fourth count on
// (index > 2), the count is stored as the difference to the count two places before it,
// which keeps alternating foreground/background runs short. Masks in this module are
// Uint8Array row-major H*W arrays (1 = foreground), the layout canvases use.

/** Run lengths of a row-major mask in column-major order, starting with zeros. */
export function maskToRuns(mask, height, width) {
  const runs = [];
  let current = 0;
  let length = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0, index = x; y < height; y++, index += width) {
      const value = mask[index] ? 1 : 0;
      if (value !== current) {
        runs.push(length);
        current = value;
        length = 0;
      }
      length++;
    }
  }
  runs.push(length);
  return runs;
}

/** A row-major mask from column-major run lengths. */
export function runsToMask(runs, height, width) {
  const total = height * width;
  const mask = new Uint8Array(total);
  let position = 0;
  for (let i = 0; i < runs.length; i++) {
    const end = position + runs[i];
    if (end > total) throw new RangeError(`RLE runs cover ${end} pixels, the mask has ${total}`);
    if (i % 2 === 1) {
      for (let p = position; p < end; p++) {
        const x = Math.floor(p / height);
        mask[(p - x * height) * width + x] = 1;
      }
    }
    position = end;
  }
  if (position !== total) throw new RangeError(`RLE runs cover ${position} of ${total} pixels`);
  return mask;
}

/** pycocotools' compressed string of a list of run lengths. */
export function encodeCounts(runs) {
  let out = "";
  for (let i = 0; i < runs.length; i++) {
    let x = runs[i];
    if (i > 2) x -= runs[i - 2];
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x = Math.floor(x / 32); // an arithmetic shift that also holds beyond 32 bits
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      out += String.fromCharCode(c + 48);
    }
  }
  return out;
}

/** Run lengths from pycocotools' compressed string. */
export function decodeCounts(counts) {
  const runs = [];
  let p = 0;
  while (p < counts.length) {
    let x = 0;
    let scale = 1;
    let more = true;
    while (more) {
      if (p >= counts.length) throw new RangeError("truncated RLE counts string");
      const c = counts.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new RangeError(`invalid RLE character at ${p}`);
      x += (c & 0x1f) * scale;
      more = (c & 0x20) !== 0;
      p++;
      scale *= 32;
      if (!more && c & 0x10) x -= scale; // sign-extend the last group
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  return runs;
}

/** {size: [H, W], counts: str} of a row-major mask. */
export function encodeMask(mask, height, width) {
  return { size: [height, width], counts: encodeCounts(maskToRuns(mask, height, width)) };
}

/** The row-major mask of a COCO RLE with compressed counts. */
export function decodeMask(rle) {
  const [height, width] = rle.size;
  return runsToMask(decodeCounts(rle.counts), height, width);
}
