"""ONNX export of the prompt encoder + mask decoder, with the official export's interface.

The browser (or any onnxruntime client) runs the decoder against a stored image embedding:

    inputs   image_embeddings  1 x C x 64 x 64   float32  (C = 256 for vit_b/l/h)
             point_coords      1 x N x 2         float32  x, y in the resized (1024) frame
             point_labels      1 x N             float32  1 fg, 0 bg, 2 / 3 box corners,
                                                          -1 padding (append one without a box)
             mask_input        1 x 1 x 256 x 256 float32  previous low-res logits
             has_mask_input    1                 float32  1 when mask_input is used, else 0
             orig_im_size      2                 float32  H, W of the original image
    outputs  masks             1 x M x H x W     float32  logits; foreground where > 0
             iou_predictions   1 x M             float32
             low_res_masks     1 x M x 256 x 256 float32  logits (feed back as mask_input)

N is dynamic. M = 4 (every mask token: 0 is the single-mask output, 1-3 the multimask
candidates) or 1 with ``return_single_mask`` (token 0 for more than one point, else the best
candidate by predicted IoU, as the official export chooses). The graph is traced with the
TorchScript exporter (``dynamo=False``): the dynamo exporter needs onnxscript, which is not a
dependency.

``low_res_decoder_onnx`` cuts an exported 4-mask graph down to the inputs and outputs a client
that does its own upscaling needs (no ``orig_im_size``, no ``masks``: outputs
``iou_predictions`` and ``low_res_masks`` only). It is the same graph minus the nodes that only
fed ``masks``, so its outputs are those of the full export, without the cost of upscaling every
token to the image size (most of a small decoder's run time in onnxruntime-web). No Django here.
"""

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from engine.sam.modeling import Sam
from engine.sam.predictor import SamPredictor

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
LOW_RES_INPUT_NAMES = INPUT_NAMES[:5]  # all but orig_im_size
LOW_RES_OUTPUT_NAMES = ("iou_predictions", "low_res_masks")
DEFAULT_OPSET = 17
_DYNAMIC_AXES = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}


class SamDecoderForExport(nn.Module):
    """Prompt encoder + mask decoder + mask postprocessing, written without data-dependent
    control flow so that one trace serves every prompt count and image size."""

    def __init__(self, sam: Sam, *, return_single_mask: bool = False) -> None:
        super().__init__()
        self.sam = sam
        self.img_size = sam.image_encoder.img_size
        self.return_single_mask = return_single_mask

    def _embed_points(self, coords: Tensor, labels: Tensor) -> Tensor:
        """coords 1 x N x 2 (resized frame), labels 1 x N -> 1 x N x C."""
        encoder = self.sam.prompt_encoder
        normalised = (coords + 0.5) / self.img_size
        embedding = encoder.pe_layer._encode(normalised)
        labels = labels.unsqueeze(-1).expand_as(embedding)
        embedding = embedding * (labels != -1)
        embedding = embedding + encoder.not_a_point_embed.weight * (labels == -1)
        for index in range(encoder.num_point_embeddings):
            weight = encoder._point_weight(index)
            embedding = embedding + weight * (labels == index)
        return embedding

    def _embed_mask(self, mask_input: Tensor, has_mask_input: Tensor) -> Tensor:
        encoder = self.sam.prompt_encoder
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return (
            has_mask_input * encoder.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask
        )

    def _select_single(self, masks: Tensor, iou: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
        """Token 0 when more than one point was given, else the best multimask candidate."""
        tokens = self.sam.mask_decoder.num_mask_tokens
        reweight = torch.tensor([[1000.0] + [0.0] * (tokens - 1)], device=iou.device)
        best = torch.argmax(iou + (num_points - 2.5) * reweight, dim=1, keepdim=True)
        picked = best[:, :, None, None].expand(-1, -1, masks.shape[2], masks.shape[3])
        return masks.gather(1, picked), iou.gather(1, best)

    def _upscale(self, low_res: Tensor, orig_im_size: Tensor) -> Tensor:
        """Low-res logits -> logits at the original size (as `Sam.postprocess_masks`)."""
        size = orig_im_size.to(torch.float32)
        scale = self.img_size / torch.max(size)
        resized = torch.clamp(torch.floor(size * scale + 0.5), min=1).to(torch.int64)
        masks = nnf.interpolate(
            low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        # index_select with an arange of a traced tensor keeps the crop dynamic (a Python int
        # would be frozen into the graph at the example's size); torch accepts 0-d tensors here
        # although its stubs say int.
        rows = torch.arange(resized[0], device=masks.device)  # type: ignore[call-overload]
        cols = torch.arange(resized[1], device=masks.device)  # type: ignore[call-overload]
        masks = masks.index_select(2, rows).index_select(3, cols)
        original = orig_im_size.to(torch.int64)
        size_hw = (original[0], original[1])  # traced tensors: the output size stays dynamic
        return nnf.interpolate(
            masks,
            size=size_hw,  # type: ignore[arg-type]
            mode="bilinear",
            align_corners=False,
        )

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        low_res, iou = self.sam.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            deferred_shuffle=True,  # a third of the graph's time was pixel shuffles
        )
        if self.return_single_mask:
            low_res, iou = self._select_single(low_res, iou, point_coords.shape[1])
        return self._upscale(low_res, orig_im_size), iou, low_res


def _example_inputs(sam: Sam) -> tuple[Tensor, ...]:
    encoder = sam.prompt_encoder
    grid_h, grid_w = encoder.image_embedding_size
    mask_h, mask_w = encoder.mask_input_size
    return (
        torch.randn(1, encoder.embed_dim, grid_h, grid_w),
        torch.randint(0, sam.image_encoder.img_size, (1, 5, 2), dtype=torch.float32),
        torch.tensor([[1.0, 0.0, 2.0, 3.0, -1.0]]),
        torch.randn(1, 1, mask_h, mask_w),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 2250.0]),
    )


def export_decoder_onnx(
    sam: Sam,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    return_single_mask: bool = False,
) -> None:
    """Write the decoder of `sam` (its prompt encoder + mask decoder) as an ONNX file."""
    model = SamDecoderForExport(sam.float().cpu(), return_single_mask=return_single_mask).eval()
    with warnings.catch_warnings():
        # The tracer warns about values that are constant by design (batch 1, head size) and
        # about the TorchScript exporter itself being legacy; neither applies here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            _example_inputs(sam),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=_DYNAMIC_AXES,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def low_res_decoder_onnx(official: bytes) -> bytes:
    """The low-res variant of an exported decoder (``export_decoder_onnx`` bytes, 4 masks).

    Keeps only the nodes that ``iou_predictions`` and ``low_res_masks`` depend on (onnx's own
    extractor); ``orig_im_size`` and ``masks`` disappear. Raises ValueError for bytes that are
    not such a graph.
    """
    import onnx
    from onnx.utils import Extractor

    try:
        model = onnx.load_from_string(official)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"not an ONNX model: {exc}") from exc
    inputs = [value.name for value in model.graph.input]
    outputs = [value.name for value in model.graph.output]
    if inputs != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
        raise ValueError(
            f"not a decoder export: inputs {inputs}, outputs {outputs}; "
            f"expected {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}"
        )
    extracted = Extractor(model).extract_model(
        list(LOW_RES_INPUT_NAMES), list(LOW_RES_OUTPUT_NAMES)
    )
    return bytes(extracted.SerializeToString())


# --- checking the exported graph against the torch predictor ----------------------------------


@dataclass(frozen=True)
class DecoderCheck:
    """Largest differences between onnxruntime and `SamPredictor` over the prompt cases."""

    cases: int
    max_abs_diff_iou: float
    max_abs_diff_low_res_logits: float
    max_abs_diff_mask_logits: float
    mask_pixels_differing: float  # fraction of thresholded mask pixels that differ
    opset: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Case:
    points: np.ndarray | None  # N x 2, original pixels
    labels: np.ndarray | None
    box: np.ndarray | None  # 4, original pixels
    use_mask: bool


def _cases(height: int, width: int) -> list[_Case]:
    w, h = float(width), float(height)
    one = np.array([[0.5 * w, 0.4 * h]])
    two = np.array([[0.3 * w, 0.3 * h], [0.7 * w, 0.6 * h]])
    box = np.array([0.1 * w, 0.2 * h, 0.8 * w, 0.9 * h])
    return [
        _Case(one, np.array([1]), None, False),
        _Case(two, np.array([1, 0]), None, False),
        _Case(None, None, box, False),
        _Case(one, np.array([0]), box, False),
        _Case(two, np.array([1, 1]), None, True),
    ]


def _onnx_feed(
    predictor: SamPredictor, case: _Case, embedding: Tensor, mask_input: np.ndarray | None
) -> dict[str, np.ndarray]:
    size = predictor.original_size
    coords: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    if case.points is not None and case.labels is not None:
        coords.append(predictor.transform.apply_coords(case.points, size))
        labels.append(case.labels.astype(np.float32))
    if case.box is not None:
        coords.append(predictor.transform.apply_boxes(case.box[None], size).reshape(2, 2))
        labels.append(np.array([2.0, 3.0], dtype=np.float32))
    else:
        coords.append(np.zeros((1, 2)))
        labels.append(np.array([-1.0], dtype=np.float32))
    mask_h, mask_w = predictor.model.prompt_encoder.mask_input_size
    return {
        "image_embeddings": embedding.detach().cpu().numpy().astype(np.float32),
        "point_coords": np.concatenate(coords)[None].astype(np.float32),
        "point_labels": np.concatenate(labels)[None].astype(np.float32),
        "mask_input": (
            np.zeros((1, 1, mask_h, mask_w), np.float32)
            if mask_input is None
            else mask_input[None].astype(np.float32)
        ),
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], dtype=np.float32),
        "orig_im_size": np.array(size, dtype=np.float32),
    }


def check_decoder_onnx(
    sam: Sam,
    onnx_path: str | Path,
    *,
    embedding: Tensor | None = None,
    original_size: tuple[int, int] = (480, 640),
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
) -> DecoderCheck:
    """Run an exported 4-mask decoder with onnxruntime and `SamPredictor` on the same embedding
    (a seeded random one unless given) and prompts; return the largest differences.

    Multimask outputs (tokens 1-3) are compared with ``predict(multimask_output=True)``, token 0
    with ``multimask_output=False``; the last case feeds a previous low-res output back.
    """
    import onnxruntime as ort  # type: ignore[import-untyped]

    encoder = sam.prompt_encoder
    if embedding is None:
        generator = torch.Generator().manual_seed(seed)
        embedding = torch.randn(
            (1, encoder.embed_dim, *encoder.image_embedding_size), generator=generator
        )
    predictor = SamPredictor(sam.float().cpu().eval())
    predictor.set_embedding(embedding, original_size=original_size)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    iou_diff = low_res_diff = logit_diff = 0.0
    differing = total = 0
    previous: np.ndarray | None = None
    cases = _cases(*original_size)
    for case in cases:
        mask_input = previous if case.use_mask else None
        feed = _onnx_feed(predictor, case, embedding, mask_input)
        onnx_masks, onnx_iou, onnx_low = session.run(list(OUTPUT_NAMES), feed)
        for multimask, tokens in ((True, slice(1, None)), (False, slice(0, 1))):
            masks, iou, low = predictor.predict(
                point_coords=case.points,
                point_labels=case.labels,
                box=case.box,
                mask_input=mask_input,
                multimask_output=multimask,
                return_logits=True,
            )
            iou_diff = max(iou_diff, float(np.abs(onnx_iou[0, tokens] - iou).max()))
            low_res_diff = max(low_res_diff, float(np.abs(onnx_low[0, tokens] - low).max()))
            logit_diff = max(logit_diff, float(np.abs(onnx_masks[0, tokens] - masks).max()))
            differing += int(((onnx_masks[0, tokens] > 0) != (masks > 0)).sum())
            total += int(masks.size)
            if multimask:
                previous = low[int(np.argmax(iou))][None]
    return DecoderCheck(
        cases=len(cases),
        max_abs_diff_iou=iou_diff,
        max_abs_diff_low_res_logits=low_res_diff,
        max_abs_diff_mask_logits=logit_diff,
        mask_pixels_differing=differing / max(total, 1),
        opset=opset,
    )
