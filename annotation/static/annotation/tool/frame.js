// The tool's frame: its state, status line, and the image it works on — finding the next image
// (leased), loading it with its accepted masks, waiting for its embedding (queued with
// priority by the server) and choosing the decoding path. tool.js adds the editing on top.

import { ApiError } from "./api.js";
import { categoryRgb } from "./categories.js";
import { BrowserDecoder, ServerDecoder } from "./decoder.js";
import { bindInput } from "./input.js";
import { PALETTE, PREFILL_STYLE, maskBitmap, paintUncovered } from "./masks.js";
import { updatePanel } from "./panel.js";
import { drawFrame } from "./render.js";
import { decodeMask } from "./rle.js";
import * as session from "./session.js";
import { bindSkip } from "./skip.js";
import { rememberVisit } from "./visited.js";
import { Viewport } from "./viewport.js";
import { newWork } from "./work.js";

const EMBEDDING_POLL_MS = 1000;
const DOUBLE_PRESS_MS = 4000;
const DEPLOY_POLL_MS = 15_000; // how often the tool asks which model version is live

/** An image an admin removed while it was open has nothing left to mark done: go on. */
function ignoreRemoved(error) {
  if (!(error instanceof ApiError && error.status === 404)) throw error;
}

export class ToolBase {
  constructor(root) {
    this.root = root;
    const data = root.dataset;
    this.projectId = Number(data.projectId);
    this.userId = Number(data.userId);
    this.idleCap = Number(data.idleCap || 30);
    this.decoderPreference = data.decoder || "auto";
    this.ortUrl = data.ortUrl;
    this.wasmBase = data.wasmBase;
    this.canvas = root.querySelector("#tool-canvas");
    this.view = new Viewport();
    this.image = null;
    this.imageElement = null;
    this.lease = null;
    this.version = null; // {id, name, arch, onnx_url}
    this.pendingVersionId = null; // a newly promoted version, used from the next image
    this.announcedVersionId = null;
    const pollMs = Number(new URLSearchParams(window.location.search).get("deploy_poll_ms"));
    this.deployPollMs = pollMs >= 500 ? pollMs : DEPLOY_POLL_MS;
    this.embedding = null;
    this.decoder = null;
    this.decoderNote = "";
    this.accepted = [];
    this.sentBack = [];
    // ?mask=<id> (the "Fix in the tool" links): opened in the editor once its image is loaded.
    this.requestedEditId = Number(new URLSearchParams(window.location.search).get("mask")) || null;
    this.hoveredId = null;
    this.overlays = { visible: true, opacity: 0.45, uncovered: false };
    this.coverageCanvas = document.createElement("canvas");
    this.coverageDirty = true;
    this.uncoveredPixels = null;
    this.mode = "prompt";
    this.brushSize = 8;
    this.gesture = null;
    this.pointer = { sx: 0, sy: 0, inside: false };
    this.panning = false;
    this.history = [];
    this.work = newWork(this.idleCap);
    this.workCanvas = document.createElement("canvas");
    this.decodeChain = Promise.resolve();
    this.latencies = []; // {path, ms}: click -> overlay drawn, for the status bar and benches
    this.pendingLatency = null;
    this.frameRequested = false;
    this.timers = [];
    this.lastN = -Infinity; // no N yet: the first one within 4 s of loading warns too
    this.loadToken = 0;
    let resolveReady;
    this.ready = new Promise((resolve) => (resolveReady = resolve));
    this.resolveReady = resolveReady;
  }

  // --- status and panel -------------------------------------------------------------------

  $(selector) {
    return this.root.querySelector(selector);
  }

  setState(state, waitText = "") {
    this.root.dataset.state = state;
    const wait = this.$("#tool-wait");
    wait.hidden = !waitText;
    this.$("#tool-wait-text").textContent = waitText;
  }

  say(text, level = "info") {
    const line = this.$("#status-message");
    line.textContent = text;
    line.dataset.level = level;
  }

  updatePanel() {
    updatePanel(this);
  }

  requestFrame() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      drawFrame(this);
      if (this.pendingLatency && this.pendingLatency.drawn) {
        const { start, path } = this.pendingLatency;
        const ms = performance.now() - start;
        this.latencies.push({ path, ms });
        this.$("#status-latency").textContent = `mask in ${Math.round(ms)} ms (${path})`;
        this.pendingLatency = null;
      }
    });
  }

  // --- images, leases, embeddings ------------------------------------------------------------

  async start() {
    bindInput(this);
    bindSkip(this);
    this.timers.push(setInterval(() => this.heartbeat(), 30_000));
    this.timers.push(setInterval(() => this.checkDeployed(), this.deployPollMs));
    this.$("#model-live-dismiss").addEventListener("click", () => (this.$("#model-live-banner").hidden = true));
    window.addEventListener("pagehide", () => {
      if (this.image && this.lease) session.releaseLease(this.image.id);
    });
    const requested = Number(this.root.dataset.imageId) || null;
    try {
      if (requested) {
        const opened = await session.openImage(requested);
        const taken = opened.leaseError && session.leaseTakenText(opened.leaseError, requested);
        if (taken) this.say(`${taken} You can look, but someone else is working here.`, "warn");
        await this.load(opened.image, opened.lease);
      } else {
        await this.next({ markDone: false });
      }
    } catch (error) {
      this.fail(error);
    }
  }

  fail(error) {
    console.error(error);
    this.setState("error");
    this.say(error.message || String(error), "error");
  }

  async next({ markDone = true } = {}) {
    const work = this.work;
    const relabelled = work.editing !== null && this.editable(work.editing.maskId)?.category !== work.editing.category;
    // Nothing can be saved on an image an admin removed meanwhile: N just moves on.
    const unsaved = !this.imageGone && (relabelled || (work.area > 0 && (!work.editing || work.prompts.length > 0 || work.strokes.length > 0)));
    if (markDone && unsaved && performance.now() - this.lastN > DOUBLE_PRESS_MS) {
      this.lastN = performance.now();
      this.say(work.editing ? "This edit is not saved: press Enter to save it, or N again to drop it." : "This mask is not accepted: press Enter to keep it, or N again to drop it.", "warn");
      return;
    }
    this.lastN = -Infinity; // a second N drops this work only, not the next image's
    try {
      if (markDone && this.image) await session.markDone(this.image.id).catch(ignoreRemoved);
      this.setState("loading", "Finding the next image…");
      const found = await session.nextImage(this.projectId);
      if (!found) {
        this.image = null;
        this.clearImageState();
        this.setState("no-image");
        this.say("No image needs work in this project right now.", "ok");
        this.updatePanel();
        this.requestFrame();
        this.resolveReady();
        return;
      }
      await this.load(found.image, found.lease);
    } catch (error) {
      this.fail(error);
    }
  }

  clearImageState() {
    this.imageElement = null;
    this.imageGone = false; // set when the server says an admin removed the image (tool.js)
    this.work = newWork(this.idleCap);
    this.history = [];
    this.accepted = [];
    this.sentBack = []; // masks a reviewer rejected, to fix (edit.js)
    this.coverageDirty = true;
    this.uncoveredPixels = null;
    this.hoveredId = null;
    this.decoder = null;
    this.embedding = null;
  }

  async load(image, lease) {
    const token = ++this.loadToken;
    this.clearImageState();
    this.image = image;
    this.lease = lease;
    this.root.dataset.imageId = String(image.id);
    rememberVisit(this, image.id);
    const url = new URL(window.location.href);
    url.searchParams.set("image", String(image.id));
    url.searchParams.delete("mask");
    window.history.replaceState(null, "", url);
    this.setState("loading", "Loading the image…");
    const element = new Image();
    element.crossOrigin = "anonymous";
    element.src = image.display_url;
    const [, masks, proposed, sentBack] = await Promise.all([
      element.decode(),
      session.acceptedMasks(image.id),
      session.proposedPrefill(image.id),
      session.sentBackMasks(image.id, this.userId, this.mayReview()),
      this.categoriesLoaded, // masks are drawn in their category's colour
    ]);
    if (token !== this.loadToken) return;
    this.imageElement = element;
    this.workCanvas.width = image.width;
    this.workCanvas.height = image.height;
    this.brushSize = Math.max(2, Math.round(Math.max(image.width, image.height) / 120));
    // Prefilled masks first (drawn below the annotator's), in id order like the others.
    this.accepted = [...proposed, ...masks].map((mask) => this.acceptedItem(mask));
    this.coverageDirty = true;
    this.fit();
    const prefilled = proposed.length;
    const leased = lease ? `Leased for ${Math.round(lease.seconds / 60)} min.` : this.$("#status-message").textContent;
    this.say(prefilled ? `${leased} ${prefilled} prefilled mask${prefilled > 1 ? "s" : ""}: reject wrong ones (R), add what is missing, then Done (N).` : leased);
    this.showSentBack(sentBack);
    if (image.status === "skipped") {
      this.say(`This image was skipped: “${image.skip_reason}”. It stays out of exports and training until a reviewer reopens it.`, "warn");
    }
    const versionId = this.pendingVersionId ?? (this.version ? this.version.id : null);
    this.pendingVersionId = null;
    await this.prepareModel(versionId, token);
  }

  acceptedItem(mask) {
    const color = categoryRgb(this, mask.category) || PALETTE[mask.id % PALETTE.length];
    const bits = decodeMask(mask.segmentation);
    // A proposed prefilled mask: the model's, not vetted yet; drawn hatched with a white edge.
    const prefill = mask.source === "prefill" && mask.status === "proposed";
    return {
      id: mask.id,
      source: mask.source,
      status: mask.status,
      prefill,
      annotator: mask.annotator,
      category: mask.category ?? null, // a category id (categories.js)
      area: mask.area,
      segmentation: mask.segmentation, // kept (small) to open the mask in the editor
      color,
      bitmap: maskBitmap(bits, this.image.width, this.image.height, color, prefill ? PREFILL_STYLE : null),
    };
  }

  /** Wait for the image's embedding (queued with priority by the server), then go live. */
  async prepareModel(versionId, token = this.loadToken) {
    const started = performance.now();
    for (;;) {
      let state;
      try {
        state = await session.embeddingState(this.image.id, versionId);
      } catch (error) {
        if (error instanceof ApiError && error.code === "model_version_gone") {
          versionId = this.switchVersion(error);
          if (versionId === null) return;
          continue;
        }
        if (error instanceof ApiError && error.code === "no_deployed_version") {
          this.version = null;
          this.setState("no-model");
          this.say("This project has no deployed model: draw masks with the brush (B).", "warn");
          this.updatePanel();
          this.requestFrame();
          this.resolveReady();
          return;
        }
        throw error;
      }
      if (token !== this.loadToken) return;
      this.version = state.model_version;
      versionId = this.version.id;
      if (state.status === "ready") {
        this.embedding = state;
        break;
      }
      const waited = Math.round((performance.now() - started) / 1000);
      this.setState("waiting-embedding", `Computing this image's embedding (queued with priority)… ${waited} s`);
      this.updatePanel();
      await new Promise((resolve) => setTimeout(resolve, EMBEDDING_POLL_MS));
      if (token !== this.loadToken) return;
    }
    await this.setupDecoder(token);
  }

  /** model_version_gone: say so and go on with the deployed version (null when none). */
  switchVersion(error) {
    const deployed = error.body.deployed_version;
    const old = this.version ? this.version.name || `version ${this.version.id}` : "the model";
    this.work = newWork(this.idleCap);
    this.history = this.history.filter((action) => action.type === "accept");
    if (!deployed) {
      this.version = null;
      this.decoder = null;
      this.setState("no-model");
      this.say(`${old} was removed and no other version is deployed: draw masks with the brush (B).`, "error");
      this.updatePanel();
      return null;
    }
    this.say(`${old} was removed; reloading the deployed version ${deployed.name || deployed.id}.`, "warn");
    this.root.dataset.versionSwitched = String(deployed.id);
    this.version = null;
    this.decoder = null;
    return deployed.id;
  }

  /** Poll the live version: a newly promoted one is announced, and used at once when no mask
   *  is being made, else from the next image. */
  async checkDeployed() {
    let deployed;
    try {
      deployed = (await session.deployedVersion(this.projectId)).deployed_version;
    } catch {
      return; // a network hiccup: the next poll asks again
    }
    let announced = false;
    if (deployed && this.version && deployed.id === this.version.id) {
      this.pendingVersionId = null;
    } else if (deployed && deployed.id !== this.announcedVersionId) {
      announced = true;
      this.announcedVersionId = deployed.id;
      this.pendingVersionId = deployed.id;
      this.$("#model-live-text").textContent = `Model v${deployed.id}${deployed.name ? ` (${deployed.name})` : ""} is live — masks now come from it.`;
      this.$("#model-live-banner").hidden = false;
    }
    if (this.pendingVersionId === null) return;
    const idle = this.work.prompts.length === 0 && this.work.strokes.length === 0;
    const settled = ["ready", "no-model", "waiting-embedding"].includes(this.root.dataset.state);
    if (this.image && idle && settled) {
      const versionId = this.pendingVersionId;
      this.pendingVersionId = null;
      const token = ++this.loadToken; // a running embedding wait for the old version stops
      this.version = null;
      this.decoder = null;
      this.embedding = null;
      await this.prepareModel(versionId, token);
    } else if (announced) {
      this.say("A new model is live: finish this mask, the next image uses it.", "info");
    }
  }

  async setupDecoder(token) {
    const { image, version, embedding } = this;
    this.updatePanel(); // version known, decoder not yet
    const server = new ServerDecoder({ imageId: image.id, versionId: version.id, width: image.width, height: image.height });
    this.decoder = server;
    this.decoderNote = "";
    if (this.decoderPreference === "server") {
      this.decoderNote = "server decoding was asked for (?decoder=server)";
    } else if (typeof WebAssembly !== "object") {
      this.decoderNote = "this browser has no WebAssembly";
    } else {
      this.setState("loading", "Loading the decoder into the browser…");
      try {
        const browser = await BrowserDecoder.create({ ortUrl: this.ortUrl, wasmBase: this.wasmBase, version, embedding });
        if (token !== this.loadToken) return;
        this.decoder = browser;
      } catch (error) {
        console.warn("browser decoding unavailable, using the server", error);
        this.decoderNote = `browser decoding failed (${error.message || error}); using the server`;
      }
    }
    this.setState("ready");
    this.updatePanel();
    this.requestFrame();
    this.resolveReady();
  }

  async heartbeat() {
    if (!this.image) return;
    try {
      if (this.lease) this.lease = await session.renewLease(this.image.id);
    } catch (error) {
      this.say(`Lease: ${error.message}`, "error");
    }
    if (this.version && this.root.dataset.state === "ready") {
      try {
        await session.embeddingState(this.image.id, this.version.id);
      } catch (error) {
        if (error instanceof ApiError && error.code === "model_version_gone") {
          const versionId = this.switchVersion(error);
          if (versionId !== null) await this.prepareModel(versionId);
        }
      }
    }
  }

  /** Recompute the uncovered-region overlay when the set of masks changed. */
  refreshCoverage() {
    if (!this.image || !this.coverageDirty) return;
    const bitmaps = this.accepted.map((item) => item.bitmap);
    this.uncoveredPixels = paintUncovered(this.coverageCanvas, bitmaps, this.image.width, this.image.height);
    this.coverageDirty = false;
  }

  fit() {
    const rect = this.canvas.getBoundingClientRect();
    if (this.image) this.view.fit(this.image.width, this.image.height, rect.width, rect.height);
    this.updatePanel();
    this.requestFrame();
  }
}
