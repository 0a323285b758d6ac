// One mask of the review page as a coloured, editable layer: a row-major 0/1 pixel buffer of
// the image's size and a canvas of the same size holding its colour where the mask is set.
import { decodeMask, encodeMask } from "./tool/rle.js";

export class MaskLayer {
  constructor(mask, width, height, color) {
    this.id = mask.id;
    this.width = width;
    this.height = height;
    this.color = color;
    this.original = decodeMask(mask.rle);
    this.pixels = this.original.slice();
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.context = this.canvas.getContext("2d");
    this.image = this.context.createImageData(width, height);
    this.paint(0, 0, width, height);
  }

  // Recolour the rectangle [x0, x1) x [y0, y1) from the pixel buffer.
  paint(x0, y0, x1, y1) {
    const data = this.image.data;
    const [r, g, b] = this.color;
    for (let y = y0; y < y1; y++) {
      let p = y * this.width + x0;
      for (let x = x0; x < x1; x++, p++) {
        const o = p * 4;
        const on = this.pixels[p] !== 0;
        data[o] = r;
        data[o + 1] = g;
        data[o + 2] = b;
        data[o + 3] = on ? 255 : 0;
      }
    }
    this.context.putImageData(this.image, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  reset() {
    this.pixels = this.original.slice();
    this.paint(0, 0, this.width, this.height);
  }

  // Set (value 1) or clear (0) a disc of `radius` image pixels around (cx, cy).
  disc(cx, cy, radius, value) {
    const x0 = Math.max(0, Math.floor(cx - radius));
    const x1 = Math.min(this.width, Math.ceil(cx + radius + 1));
    const y0 = Math.max(0, Math.floor(cy - radius));
    const y1 = Math.min(this.height, Math.ceil(cy + radius + 1));
    if (x0 >= x1 || y0 >= y1) return;
    const r2 = radius * radius;
    for (let y = y0; y < y1; y++) {
      const dy = y + 0.5 - cy;
      for (let x = x0; x < x1; x++) {
        const dx = x + 0.5 - cx;
        if (dx * dx + dy * dy <= r2) this.pixels[y * this.width + x] = value;
      }
    }
    this.paint(x0, y0, x1, y1);
  }

  toRle() {
    return encodeMask(this.pixels, this.height, this.width);
  }

  area() {
    let n = 0;
    for (let i = 0; i < this.pixels.length; i++) n += this.pixels[i];
    return n;
  }
}
