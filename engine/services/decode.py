"""Prompt -> masks on the server: the prompt encoder and mask decoder against a stored embedding.

A decode validates the prompts against the image (every problem is a 400 ``invalid_prompt``
that names the value), resolves the previous mask from its ``mask_ref``, reads the embedding
through the per-process LRU (``engine.services.serving``) and runs
``engine.sam.decode_masks.predict_masks`` (the masks of ``SamPredictor.predict``, upsampled
only near their boundaries and run-length encoded from tiles when that is cheaper) on the model
of the version (loaded once per process by ``engine.inference``; the image encoder is never run
here); the embedding, the model and the decode are all read and run on the process's decoder
thread. Each call keeps the candidates' low-res logits behind one ``mask_ref`` each
(``engine.services.mask_refs``); sending a ref back feeds those logits as ``mask_input``, as
the official tool does with its previous mask.

``multimask`` left unset follows SAM's ambiguity rule: three candidates for exactly one point
and no box, the single-mask token otherwise.
"""

import base64
import io
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from django.conf import settings
from django.contrib.auth.models import User
from PIL import Image as PilImage

from annotation.errors import DomainError
from annotation.models import Image
from engine.inference import model_for_version
from engine.models import ModelVersion
from engine.sam.decode_masks import DecodedMasks, predict_masks
from engine.sam.embedding import ImageEmbedding
from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor
from engine.sam.prompts import check_box, check_points
from engine.services.mask_refs import (  # InvalidMaskRef: raised from here too
    InvalidMaskRef,
    mask_ref_load,
    mask_refs_begin,
)
from engine.services.serving import (
    EmbeddingNotReady,
    embedding_cached,
    embedding_queue,
    on_decoder_thread,
    serving_version,
)

FORMATS = ("rle", "png")


class InvalidPrompt(DomainError):
    """Points, labels or box that cannot be a prompt on this image."""

    code = "invalid_prompt"


__all__ = ["InvalidMaskRef", "InvalidPrompt", "masks_decode", "prompt_parse"]


@dataclass(frozen=True)
class Prompt:
    """A validated prompt in original-image pixels."""

    points: np.ndarray | None  # N x 2 float64 (x, y)
    labels: np.ndarray | None  # N int64 in {0, 1}
    box: np.ndarray | None  # 1 x 4 float64 xyxy

    @property
    def point_count(self) -> int:
        return 0 if self.points is None else int(self.points.shape[0])


@dataclass(frozen=True)
class DecodedMask:
    score: float
    mask_ref: str
    rle: dict[str, Any] | None = None  # {"size": [H, W], "counts": str}
    png: str | None = None  # base64 of a 1-bit PNG


@dataclass(frozen=True)
class DecodeResult:
    model_version: ModelVersion
    multimask: bool
    width: int
    height: int
    masks: list[DecodedMask] = field(default_factory=list)
    decoder_seconds: float = 0.0  # the prompt encoder + mask decoder (+ upsampling) alone


def _plain_number(value: object) -> bool:
    # JSON numbers only: a bool or a numeric string must not slip through numpy's conversion.
    return isinstance(value, int | float) and not isinstance(value, bool)


def prompt_parse(*, points: object, labels: object, box: object, width: int, height: int) -> Prompt:
    """Check a request's prompt against a ``width`` x ``height`` image; InvalidPrompt if bad."""
    points = [] if points is None else points
    labels = [] if labels is None else labels
    if not isinstance(points, list) or not isinstance(labels, list):
        raise InvalidPrompt("points must be a list of [x, y] pairs and labels a list of 0 / 1")
    limit = int(settings.MASKLOOP_MAX_PROMPT_POINTS)
    if len(points) > limit:
        raise InvalidPrompt(
            f"{len(points)} points: at most {limit} per request (MASKLOOP_MAX_PROMPT_POINTS)"
        )
    if len(labels) != len(points):
        raise InvalidPrompt(f"{len(points)} points but {len(labels)} labels: give one label each")
    if not points and box is None:
        raise InvalidPrompt("no prompt: give at least one point or a box")
    size = (height, width)
    parsed_points = parsed_labels = parsed_box = None
    try:
        if points:
            for point in points:
                if not (
                    isinstance(point, list) and len(point) == 2 and all(map(_plain_number, point))
                ):
                    raise ValueError(f"each point must be [x, y] numbers, got {point!r}")
            if not all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
                raise ValueError(f"labels must be integers 0 or 1, got {labels!r}")
            parsed_points, parsed_labels = check_points(points, labels, size)
        if box is not None:
            if not (isinstance(box, list) and len(box) == 4 and all(map(_plain_number, box))):
                raise ValueError(f"box must be [x0, y0, x1, y1] numbers, got {box!r}")
            parsed_box = check_box(box, size)
            x0, y0, x1, y1 = parsed_box[0].tolist()
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"box {parsed_box[0].tolist()} has no area")
    except ValueError as exc:
        raise InvalidPrompt(_readable(str(exc))) from exc
    return Prompt(parsed_points, parsed_labels, parsed_box)


_WORDS = (
    (re.compile(r"\bnan\b"), "NaN"),  # as JavaScript writes them
    (re.compile(r"\binf\b"), "Infinity"),
    (re.compile(r"\bpoint_coords\b"), "points"),  # the request's field names
    (re.compile(r"\bpoint_labels\b"), "labels"),
)


def _readable(message: str) -> str:
    """The validator's message in the request's terms, kept short (10,000 points...)."""
    for pattern, word in _WORDS:
        message = pattern.sub(word, message)
    return message if len(message) <= 500 else message[:497] + "..."


def multimask_default(prompt: Prompt) -> bool:
    """SAM's ambiguity rule: one point alone is ambiguous (three candidates), more is not."""
    return prompt.point_count == 1 and prompt.box is None


# --- decoding ------------------------------------------------------------------------------------


def masks_decode(
    *,
    user: User,
    image: Image,
    model_version_id: int | None,
    points: object,
    labels: object,
    box: object,
    mask_ref: str | None = None,
    multimask: bool | None = None,
    output_format: str = "rle",
) -> DecodeResult:
    """Masks for a prompt on ``image`` (its project's version ``model_version_id``, default the
    deployed one). Raises ModelVersionGone / NoDeployedVersion (409), InvalidPrompt,
    InvalidMaskRef (400), EmbeddingNotReady (409; the embedding is queued with priority)."""
    if output_format not in FORMATS:
        raise InvalidPrompt(f"format must be one of {list(FORMATS)}, got {output_format!r}")
    version = serving_version(project=image.project, version_id=model_version_id)
    prompt = prompt_parse(
        points=points, labels=labels, box=box, width=image.width, height=image.height
    )
    mask_input = None
    if mask_ref is not None:
        mask_input = mask_ref_load(ref=mask_ref, user=user, image=image, model_version=version)
    use_multimask = multimask_default(prompt) if multimask is None else bool(multimask)
    refs = mask_refs_begin(user=user, image=image, model_version=version)
    started = time.perf_counter()
    decoded = on_decoder_thread(
        lambda: _predict(version, image, prompt, mask_input, multimask=use_multimask)
    )
    decoder_seconds = time.perf_counter() - started
    if decoded is None:
        embedding_queue(image=image, model_version=version)
        raise EmbeddingNotReady(
            f"the embedding of image {image.pk} for model version {version.pk} is being "
            "computed; retry in a moment"
        )
    predicted, logits = decoded
    masks = _encode(predicted, refs=refs.store(logits), output_format=output_format)
    return DecodeResult(
        model_version=version,
        multimask=use_multimask,
        width=image.width,
        height=image.height,
        masks=masks,
        decoder_seconds=decoder_seconds,
    )


# The decoder thread's predictor, kept while the model and the embedding stay the same (the
# next click on the same image skips set_embedding's checks); only that thread touches it.
_current: tuple[Sam, ImageEmbedding, SamPredictor] | None = None


def _predict(
    version: ModelVersion,
    image: Image,
    prompt: Prompt,
    mask_input: np.ndarray | None,
    *,
    multimask: bool,
) -> tuple[DecodedMasks, np.ndarray] | None:
    """On the decoder thread, every torch operation of a click (the model and the embedding
    are read here too, see `on_decoder_thread`): the candidates' masks, scores and low-res
    logits, and those logits as float16 for the mask refs (torch converts them in 0.04 ms,
    numpy in 0.7). None while the embedding is not stored."""
    global _current
    embedding = embedding_cached(image=image, model_version=version)
    if embedding is None:
        return None
    model = model_for_version(version, decoder_only=True)
    if _current is not None and _current[0] is model and _current[1] is embedding:
        predictor = _current[2]
    else:
        predictor = SamPredictor(model)
        predictor.set_embedding(embedding)
        _current = (model, embedding, predictor)
    predicted = predict_masks(
        predictor,
        point_coords=prompt.points,
        point_labels=prompt.labels,
        box=prompt.box,
        mask_input=mask_input,
        multimask_output=multimask,
    )
    return predicted, torch.from_numpy(predicted.low_res).half().numpy()


def _encode(predicted: DecodedMasks, *, refs: list[str], output_format: str) -> list[DecodedMask]:
    """The candidates as answered: RLE (from the tile plan when there is one) or 1-bit PNG."""
    scores = [float(score) if math.isfinite(float(score)) else 0.0 for score in predicted.scores]
    if output_format == "png":
        answers = []
        for mask, score, ref in zip(predicted.masks(), scores, refs, strict=True):
            out = io.BytesIO()
            PilImage.fromarray(np.ascontiguousarray(mask)).save(out, "PNG")  # bool: mode "1"
            png = base64.b64encode(out.getvalue()).decode()
            answers.append(DecodedMask(score=score, mask_ref=ref, png=png))
        return answers
    return [
        DecodedMask(score=score, mask_ref=ref, rle=rle)
        for rle, score, ref in zip(predicted.coco_rles(), scores, refs, strict=True)
    ]
