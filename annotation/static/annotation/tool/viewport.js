// Screen <-> image coordinates for a zoomable, pannable canvas: screen = image * scale + t.

export const MIN_SCALE = 0.01;
export const MAX_SCALE = 40;

export class Viewport {
  constructor() {
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
  }

  /** Whole image visible and centred in a view of viewW x viewH CSS pixels. */
  fit(imageW, imageH, viewW, viewH, margin = 16) {
    const scale = Math.min((viewW - 2 * margin) / imageW, (viewH - 2 * margin) / imageH);
    this.scale = Math.max(MIN_SCALE, Math.min(MAX_SCALE, scale));
    this.tx = (viewW - imageW * this.scale) / 2;
    this.ty = (viewH - imageH * this.scale) / 2;
  }

  /** Zoom by factor keeping the image point under screen (sx, sy) in place. */
  zoomAt(factor, sx, sy) {
    const scale = Math.max(MIN_SCALE, Math.min(MAX_SCALE, this.scale * factor));
    const [ix, iy] = this.toImage(sx, sy);
    this.scale = scale;
    this.tx = sx - ix * scale;
    this.ty = sy - iy * scale;
  }

  pan(dx, dy) {
    this.tx += dx;
    this.ty += dy;
  }

  toImage(sx, sy) {
    return [(sx - this.tx) / this.scale, (sy - this.ty) / this.scale];
  }

  toScreen(ix, iy) {
    return [ix * this.scale + this.tx, iy * this.scale + this.ty];
  }
}

/**
 * Active working time: the sum of the gaps between consecutive interactions, each gap capped
 * at idleCapSeconds, from start() (the first prompt or stroke of a mask) to seconds().
 */
export class ActiveTimer {
  constructor(idleCapSeconds) {
    this.cap = idleCapSeconds * 1000;
    this.reset();
  }

  reset() {
    this.started = false;
    this.activeMs = 0;
    this.last = 0;
  }

  start(now = performance.now()) {
    if (this.started) return;
    this.started = true;
    this.activeMs = 0;
    this.last = now;
  }

  touch(now = performance.now()) {
    if (!this.started) return;
    this.activeMs += Math.min(Math.max(0, now - this.last), this.cap);
    this.last = now;
  }

  seconds(now = performance.now()) {
    this.touch(now);
    return this.activeMs / 1000;
  }

  snapshot() {
    return { started: this.started, activeMs: this.activeMs };
  }

  restore(snapshot, now = performance.now()) {
    this.started = snapshot.started;
    this.activeMs = snapshot.activeMs;
    this.last = now;
  }
}
