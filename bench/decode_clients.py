"""The clients of bench/decode_latency.py: simulated annotators clicking over HTTP like the
tool, and the bare decoder call (``SamPredictor.predict``) replaying their prompts."""

import http.client
import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


@dataclass
class Target:
    name: str
    version_id: int
    image_id: int
    # The image's objects (its scene's masks) where known: clicks then land on objects, as an
    # annotator's do; otherwise anywhere in the image.
    objects: list[np.ndarray] | None = None


# --- the simulated annotator ----------------------------------------------------------------------


def clicks(
    seed: int,
    width: int,
    height: int,
    count: int,
    *,
    objects: list[np.ndarray] | None = None,
    per_object: int = 1,
) -> list[tuple[float, float, int]]:
    """``count`` (x, y, label) clicks, 80 % positive (label 1). Without ``objects`` anywhere in
    the image. With them (bool H x W masks), each run of ``per_object`` clicks is one object's:
    the first on it, then positive ones on it and negative ones beside it (in its bounding box
    but off the object), as an annotator refines a mask."""
    rng = np.random.default_rng(seed)
    if objects is None:
        return [
            (float(rng.uniform(0, width)), float(rng.uniform(0, height)), int(rng.random() < 0.8))
            for _ in range(count)
        ]
    result: list[tuple[float, float, int]] = []
    inside = beside = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for index in range(count):
        if index % per_object == 0:
            mask = objects[int(rng.integers(len(objects)))]
            ys, xs = np.nonzero(mask)
            y0, x0 = int(ys.min()), int(xs.min())
            off_y, off_x = np.nonzero(~mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1])
            inside, beside = (ys, xs), (off_y + y0, off_x + x0)
        label = 1 if index % per_object == 0 else int(rng.random() < 0.8)
        pool = inside if label == 1 or len(beside[0]) == 0 else beside
        pick = int(rng.integers(len(pool[0])))
        result.append((float(pool[1][pick]) + 0.5, float(pool[0][pick]) + 0.5, label))
    return result


def prompt_steps(
    sequence: list[tuple[float, float, int]], per_object: int
) -> "list[tuple[list[list[float]], list[int], bool]]":
    """The tool's prompts for a click sequence: (points, labels, new object) per click; every
    ``per_object`` clicks a new object, whose first click is positive."""
    steps: list[tuple[list[list[float]], list[int], bool]] = []
    points: list[list[float]] = []
    labels: list[int] = []
    for x, y, label in sequence:
        fresh = not points or len(points) >= per_object
        if fresh:
            points, labels = [], []
        points = [*points, [x, y]]
        labels = [*labels, label if len(points) > 1 else 1]
        steps.append((points, labels, fresh))
    return steps


class Annotator:
    """One keep-alive connection; clicks like the tool (refining with the previous mask)."""

    def __init__(self, port: int, token: str, target: Target, think: float = 0.0) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.think = think  # seconds of looking at the mask before each click (not timed)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.target = target
        self.mask_ref: str | None = None
        self.answer_bytes: list[int] = []
        self.candidates = 0  # masks answered, and how many of them were empty (area 0)
        self.empty = 0
        self.server_ms: list[dict[str, float]] = []  # the answers' Server-Timing durations
        self.reconnects = 0  # idle connections the server had closed

    def _post(self, body: str) -> http.client.HTTPResponse:
        self.connection.request(
            "POST", f"/api/images/{self.target.image_id}/decode/", body, self.headers
        )
        return self.connection.getresponse()

    def click(self, points: list[list[float]], labels: list[int], fresh: bool) -> float:
        if fresh:
            self.mask_ref = None
        if self.think:
            time.sleep(self.think)
        body = json.dumps(
            {
                "model_version": self.target.version_id,
                "points": points,
                "labels": labels,
                "mask_ref": self.mask_ref,
            }
        )
        start = time.perf_counter()
        try:
            response = self._post(body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (gunicorn's --keep-alive) while
            # this annotator was thinking: reconnect, as a browser does; timed from here.
            self.connection.close()
            self.reconnects += 1
            start = time.perf_counter()
            response = self._post(body)
        raw = response.read()
        answer = json.loads(raw)
        elapsed = time.perf_counter() - start
        self.answer_bytes.append(len(raw))
        self.server_ms.append(server_timing(response.getheader("Server-Timing", "")))
        if response.status != 200:
            raise SystemExit(f"decode answered {response.status}: {answer}")
        best = max(answer["masks"], key=lambda mask: mask["score"])
        self.mask_ref = best["mask_ref"]
        # How realistic the answers are: trained checkpoints rarely answer an empty candidate.
        self.candidates += len(answer["masks"])
        self.empty += sum(
            int(mask_utils.area(mask["rle"])) == 0 for mask in answer["masks"] if "rle" in mask
        )
        return elapsed

    def floor(self) -> float:
        """Seconds of one ``GET /healthz`` on this annotator's connection: answered by the first
        middleware, it is the round trip of gunicorn, loopback and this client alone."""
        start = time.perf_counter()
        try:
            self.connection.request("GET", "/healthz")
            response = self.connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.connection.close()
            start = time.perf_counter()
            self.connection.request("GET", "/healthz")
            response = self.connection.getresponse()
        response.read()
        return time.perf_counter() - start


def server_timing(header: str) -> dict[str, float]:
    """``{"decoder": ms, "view": ms}`` from a ``Server-Timing`` header."""
    durations = {}
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            if param.startswith("dur="):
                durations[name] = float(param[4:])
    return durations


def percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.array(samples) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def run_threads(count: int, work: Callable[[int], list[float]]) -> tuple[list[float], float]:
    results: list[list[float]] = [[] for _ in range(count)]
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as exc:  # reported after join
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(index,)) for index in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return [value for chunk in results for value in chunk], wall


# --- the bare decoder -----------------------------------------------------------------------------


class BareDecoder:
    """SamPredictor on the stored embedding, replaying the annotators' exact prompts."""

    def __init__(self, target: Target) -> None:
        from annotation.models import Image
        from engine.models import ModelVersion
        from engine.sam.checkpoint import load_sam
        from engine.sam.predictor import SamPredictor
        from engine.services.embeddings import embedding_load
        from storage.blobs import get_blob_store

        version = ModelVersion.objects.get(pk=target.version_id)
        image = Image.objects.get(pk=target.image_id)
        path = Path(tempfile.mkdtemp()) / "model.pth"
        path.write_bytes(get_blob_store().get_bytes(version.checkpoint_key))
        self.predictor = SamPredictor(load_sam(path, arch=version.arch).eval())
        stored = embedding_load(image=image, model_version=version)
        assert stored is not None
        self.predictor.set_embedding(stored)

    def call(
        self, points: list[list[float]], labels: list[int], previous: Any
    ) -> tuple[float, Any]:
        """One decode like the tool's: (its seconds, the best candidate's logits to feed back)."""
        start = time.perf_counter()
        _, scores, low_res = self.predictor.predict(
            point_coords=np.array(points),
            point_labels=np.array(labels),
            mask_input=previous,
            multimask_output=len(points) == 1,
        )
        elapsed = time.perf_counter() - start
        return elapsed, low_res[int(np.argmax(scores))][None]

    def session(
        self, steps: "list[tuple[list[list[float]], list[int], bool]]", think: float = 0.0
    ) -> list[float]:
        times: list[float] = []
        previous = None
        for points, labels, fresh in steps:
            if think:
                time.sleep(think)
            elapsed, previous = self.call(points, labels, None if fresh else previous)
            times.append(elapsed)
        return times
