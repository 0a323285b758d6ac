"""One image through the automatic generator, reusing a stored embedding, with timings.

`RunGenerator` is the stock `SamAutomaticMaskGenerator` with two seams: its predictor takes
the image's stored embedding for the whole-image crop (the only crop whose embedding the store
keeps), and the encoder and decoder calls are timed. Post-processing (stability, NMS, region
cleanup, RLE) is the rest of ``generate``. On CUDA the clock waits for the device
(``torch.cuda.synchronize``) so that asynchronous kernels are charged to the stage that
launched them.
"""

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine.sam.amg import SamAutomaticMaskGenerator
from engine.sam.embedding import ImageEmbedding
from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StageTimes:
    """Seconds spent per stage of one image."""

    load: float = 0.0
    encoder: float = 0.0
    decoder: float = 0.0
    postprocess: float = 0.0
    db: float = 0.0
    encoder_runs: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "load": round(self.load, 6),
            "encoder": round(self.encoder, 6),
            "decoder": round(self.decoder, 6),
            "postprocess": round(self.postprocess, 6),
            "db": round(self.db, 6),
            "encoder_runs": self.encoder_runs,
        }


class _RunPredictor(SamPredictor):
    """A predictor whose whole-image ``set_image`` uses the stored embedding when given one,
    and keeps the one it computed otherwise (for the caller to store)."""

    def __init__(self, model: Sam, *, precision: str, times: StageTimes) -> None:
        super().__init__(model, precision=precision)
        self.times = times
        self.full_size: tuple[int, int] = (0, 0)
        self.stored: ImageEmbedding | None = None
        self.computed: ImageEmbedding | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        whole = (int(image.shape[0]), int(image.shape[1])) == self.full_size
        if whole and self.stored is not None:
            self.set_embedding(self.stored)
            return
        _sync(self.device)
        start = time.perf_counter()
        super().set_image(image, image_format)
        _sync(self.device)
        self.times.encoder += time.perf_counter() - start
        self.times.encoder_runs += 1
        if whole and self.features is not None:
            self.computed = ImageEmbedding(
                self.features.detach().cpu(), self.original_size, self.input_size
            )


class RunGenerator(SamAutomaticMaskGenerator):
    """`SamAutomaticMaskGenerator` (COCO RLE output) with stored-embedding reuse and timings."""

    def __init__(self, model: Sam, *, settings: dict[str, Any], precision: str) -> None:
        super().__init__(model, output_mode="coco_rle", **settings)
        self.times = StageTimes()
        self.run_predictor = _RunPredictor(model, precision=precision, times=self.times)
        self.predictor = self.run_predictor

    def _decode(self, points: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        device = self.predictor.device
        _sync(device)
        start = time.perf_counter()
        decoded = super()._decode(points)
        _sync(device)
        self.times.decoder += time.perf_counter() - start
        return decoded

    def generate_image(
        self, pixels: np.ndarray, *, stored: ImageEmbedding | None
    ) -> tuple[list[dict[str, Any]], StageTimes, ImageEmbedding | None]:
        """Records for an H x W x 3 uint8 image, its stage times (db and load left at 0) and
        the whole-image embedding computed here (None when ``stored`` was used)."""
        times = StageTimes()
        self.times = self.run_predictor.times = times
        self.run_predictor.full_size = (int(pixels.shape[0]), int(pixels.shape[1]))
        usable = (
            stored
            if stored is not None and stored.original_size == self.run_predictor.full_size
            else None
        )
        self.run_predictor.stored = usable
        self.run_predictor.computed = None
        start = time.perf_counter()
        records = self.generate(pixels)
        _sync(self.predictor.device)
        total = time.perf_counter() - start
        times.postprocess = max(0.0, total - times.encoder - times.decoder)
        computed = self.run_predictor.computed
        self.run_predictor.stored = self.run_predictor.computed = None
        return records, times, computed
