"""The official segment-anything side of bench/sam_speed.py: a worker driven over stdin/stdout.

Runs in the reference environment (the official package needs torchvision)::

    /tmp/refvenv/bin/python tools/goldens/ref_speed.py

bench/sam_speed.py starts it and sends one JSON command per line; each answer is one JSON
line on stdout (anything the libraries print goes to stderr). Timings are taken here, around
the official call alone, so the pipe costs nothing. Commands:

- {"cmd": "load", "arch", "checkpoint", "threads", "device"} -> {"torch": version}
- {"cmd": "set_image", "image": path.npy, "embedding_out": path.npy | null} -> {"seconds"}
- {"cmd": "predict", "point": [x, y], "masks_out": path.npy | null} -> {"seconds"}
- {"cmd": "encode_batch", "images": path.npy (B x 1024 x 1024 x 3 uint8, already resized),
  "repeats": n} -> {"seconds": [per batch]}  (the encoder alone, fp32, synchronised)
- {"cmd": "quit"}
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from engine.sam.config import CONFIGS  # noqa: E402  (plain dataclasses, no torch)
from tools.goldens.make_sam_goldens import build_official  # noqa: E402


class Worker:
    def __init__(self) -> None:
        self.predictor: SamPredictor | None = None
        self.device = torch.device("cpu")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def load(self, arch: str, checkpoint: str, threads: int, device: str) -> dict[str, Any]:
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        if arch in sam_model_registry:
            sam = sam_model_registry[arch](checkpoint=checkpoint)
        else:  # small test architectures: the official classes with our configuration
            sam = build_official(CONFIGS[arch])
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            sam.load_state_dict(state, strict=True)
        sam = sam.to(self.device).eval()
        self.predictor = SamPredictor(sam)
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    def _ready(self) -> SamPredictor:
        if self.predictor is None:
            raise RuntimeError("load first")
        return self.predictor

    def set_image(self, image: str, embedding_out: str | None) -> dict[str, Any]:
        predictor = self._ready()
        pixels = np.load(image)
        self._sync()
        start = time.perf_counter()
        predictor.set_image(pixels)
        self._sync()
        seconds = time.perf_counter() - start
        if embedding_out:
            np.save(embedding_out, predictor.get_image_embedding().cpu().numpy())
        return {"seconds": seconds}

    def predict(self, point: list[float], masks_out: str | None) -> dict[str, Any]:
        predictor = self._ready()
        coords = np.array([point], dtype=np.float64)
        labels = np.array([1])
        self._sync()
        start = time.perf_counter()
        masks, _, _ = predictor.predict(
            point_coords=coords, point_labels=labels, multimask_output=True
        )
        self._sync()
        seconds = time.perf_counter() - start
        if masks_out:
            np.save(masks_out, masks)
        return {"seconds": seconds}

    @torch.no_grad()
    def encode_batch(self, images: str, repeats: int) -> dict[str, Any]:
        sam = self._ready().model
        pixels = torch.from_numpy(np.load(images)).permute(0, 3, 1, 2).to(self.device)
        times = []
        for _ in range(repeats):
            self._sync()
            start = time.perf_counter()
            batch = torch.stack([sam.preprocess(image) for image in pixels.float()])
            sam.image_encoder(batch)
            self._sync()
            times.append(time.perf_counter() - start)
        return {"seconds": times}


def main() -> None:
    worker = Worker()
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints off the answer channel
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("cmd")
        if command == "quit":
            break
        try:
            answer = getattr(worker, command)(**request)
        except Exception as exc:  # reported to the driver, which stops
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
