"""`SamPredictor`: the official numpy-in / numpy-out interface, plus stored embeddings.

Typical use::

    predictor = SamPredictor(build_sam("vit_b", "sam_vit_b_01ec64.pth"))
    predictor.set_image(image)                       # H x W x 3 uint8 RGB
    masks, scores, logits = predictor.predict(point_coords=np.array([[500, 375]]),
                                              point_labels=np.array([1]))

`set_embedding` puts a previously computed `get_image_embedding()` (or an
`engine.sam.embedding.ImageEmbedding`) in place of running the image encoder, so a web process
can serve prompts against a shared embedding.

`SamPredictor(model, precision="bf16")` runs the image encoder under bf16 autocast (CPU or
CUDA) and keeps its embedding float32. The prompt encoder and mask decoder always run in
float32: they take milliseconds, and bf16 there triples the mask difference to fp32 (measured on
the goldens: 0.15-0.18 % of pixels with a bf16 encoder, 0.4-0.7 % with a bf16 decoder too).
The default "fp32" is the official numerics.
"""

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

from engine.sam.device import check_precision, precision_context
from engine.sam.embedding import ImageEmbedding
from engine.sam.modeling import Sam
from engine.sam.modeling.mask_decoder import defer_shuffle_on
from engine.sam.prompts import as_rgb_uint8, check_box, check_mask_input, check_points
from engine.sam.transforms import ResizeLongestSide


class SamPredictor:
    """Embed one image, then answer any number of prompts against it."""

    def __init__(self, sam_model: Sam, *, precision: str = "fp32") -> None:
        self.model = sam_model
        self.precision = check_precision(precision)
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def _low_res_size(self) -> tuple[int, int]:
        height, width = self.model.prompt_encoder.mask_input_size
        return height, width

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: Tensor | None = None
        self.orig_h: int | None = None
        self.orig_w: int | None = None
        self.input_h: int | None = None
        self.input_w: int | None = None
        self.original_size: tuple[int, int] = (0, 0)
        self.input_size: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an H x W x 3 uint8 image (grayscale and RGBA are converted, see prompts.py)."""
        rgb = as_rgb_uint8(image, image_format)
        resized = self.transform.apply_image(rgb)
        tensor = torch.as_tensor(resized, device=self.device)
        tensor = tensor.permute(2, 0, 1).contiguous()[None, :, :, :]
        self.set_torch_image(tensor, (int(rgb.shape[0]), int(rgb.shape[1])))

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Embed a 1 x 3 x h x w image already resized so that max(h, w) = 1024."""
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or max(shape[2:]) != size:
            raise ValueError(
                f"set_torch_image needs 1 x 3 x h x w with max(h, w) = {size}, got {shape}"
            )
        original = self._check_size("original_image_size", original_image_size)
        self.reset_image()
        self.original_size = original
        self.input_size = (int(shape[2]), int(shape[3]))
        image = self.model.preprocess(transformed_image.to(self.device))
        with precision_context(self.device, self.precision):
            features = self.model.image_encoder(image)
        self._store(features.float())

    def set_embedding(
        self,
        embedding: Tensor | ImageEmbedding,
        original_size: tuple[int, ...] | None = None,
        input_size: tuple[int, ...] | None = None,
    ) -> None:
        """Use a stored 1 x 256 x 64 x 64 embedding of an image of `original_size` (H, W).

        `input_size` (the resized h, w) follows from `original_size`; when given it must agree.
        An `ImageEmbedding` (from `embed_images`) carries both sizes and is passed alone.
        """
        if isinstance(embedding, ImageEmbedding):
            if original_size is not None or input_size is not None:
                raise ValueError("pass an ImageEmbedding alone: it carries its own sizes")
            original_size, input_size = embedding.original_size, embedding.input_size
            embedding = embedding.embedding
        if original_size is None:
            raise ValueError("original_size (H, W) is required with a bare embedding tensor")
        original = self._check_size("original_size", original_size)
        expected = self.transform.get_preprocess_shape(*original, self.transform.target_length)
        if input_size is not None and tuple(int(v) for v in input_size) != expected:
            raise ValueError(
                f"input_size {tuple(input_size)} does not follow from original_size {original} "
                f"(expected {expected})"
            )
        grid = self.model.prompt_encoder.image_embedding_size
        channels = self.model.prompt_encoder.embed_dim
        wanted = (1, channels, *grid)
        if not isinstance(embedding, Tensor) or tuple(embedding.shape) != wanted:
            got = tuple(embedding.shape) if isinstance(embedding, Tensor) else type(embedding)
            raise ValueError(f"embedding must be a tensor of shape {wanted}, got {got}")
        if not bool(torch.isfinite(embedding).all()):
            raise ValueError("embedding contains NaN or infinite values")
        self.reset_image()
        self.original_size = original
        self.input_size = expected
        self._store(embedding.to(device=self.device, dtype=torch.float32))

    def _store(self, features: Tensor) -> None:
        self.features = features
        self.orig_h, self.orig_w = self.original_size
        self.input_h, self.input_w = self.input_size
        self.is_image_set = True

    @staticmethod
    def _check_size(name: str, size: tuple[int, ...]) -> tuple[int, int]:
        values = tuple(size)
        if len(values) != 2 or any(int(v) != v or int(v) < 1 for v in values):
            raise ValueError(f"{name} must be (H, W) positive integers, got {size!r}")
        return int(values[0]), int(values[1])

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts in original-image pixels.

        point_coords N x 2 (x, y), point_labels N (1 foreground, 0 background), box 4 (xyxy),
        mask_input 1 x 256 x 256 logits (e.g. a previous call's low-res output). Returns
        masks C x H x W (bool, or float32 logits with return_logits), iou predictions C float32
        and low-res logits C x 256 x 256 float32; C = 3 with multimask_output, else 1.
        """
        masks, iou, low_res = self.predict_torch(
            *self._prompt_tensors(point_coords, point_labels, box, mask_input),
            multimask_output=multimask_output,
            return_logits=return_logits,
        )
        return (
            masks[0].detach().cpu().numpy(),
            iou[0].detach().float().cpu().numpy(),
            low_res[0].detach().float().cpu().numpy(),
        )

    @torch.no_grad()
    def predict_transposed(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`predict` with each mask transposed: masks C x W x H bool, C-contiguous.

        ``masks[i].T`` is the H x W mask of `predict`, pixel for pixel, in column-major
        (Fortran) order without a copy: what COCO RLE encoders read (``.view(np.uint8)`` makes
        it their uint8 for free). The logits are those of `predict`, computed without the
        padding rows / columns it upsamples and crops away (`upscale_masks`). Scores and
        low-res logits are those of `predict`.
        """
        low_res, iou = self.predict_low_res(
            point_coords, point_labels, box, mask_input, multimask_output
        )
        return (
            self.transposed_masks(low_res),
            iou[0].detach().float().cpu().numpy(),
            low_res[0].detach().float().cpu().numpy(),
        )

    def predict_low_res(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """`predict`'s prompts -> (low-res logits 1 x C x 256 x 256, iou 1 x C) on the model's
        device, before any upsampling (callers that build full-resolution masks their own way)."""
        return self._decode_low_res(
            *self._prompt_tensors(point_coords, point_labels, box, mask_input),
            multimask_output=multimask_output,
        )

    def transposed_masks(self, low_res: Tensor) -> np.ndarray:
        """Low-res logits 1 x C x 256 x 256 -> `predict`'s masks transposed, C x W x H bool."""
        logits = upscale_masks(low_res, self.input_size, self.original_size, self.model.img_size)
        height, width = self.original_size
        masks = torch.empty((logits.shape[1], width, height), dtype=torch.bool, device=self.device)
        # Thresholding reads the logits through a transposed view and writes C-contiguous: the
        # transpose costs a fraction of a separate copy, and the values are untouched.
        torch.gt(logits[0].transpose(-1, -2), self.model.mask_threshold, out=masks)
        return masks.cpu().numpy()

    def _prompt_tensors(
        self,
        point_coords: np.ndarray | None,
        point_labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """numpy prompts in original-image pixels -> `predict_torch`'s batch-of-one tensors."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        coords_torch = labels_torch = box_torch = mask_torch = None
        if point_coords is not None:
            coords, labels = check_points(point_coords, point_labels, self.original_size)
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_torch = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_torch = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        elif point_labels is not None:
            raise ValueError("point_labels given without point_coords")
        if box is not None:
            boxes = self.transform.apply_boxes(
                check_box(box, self.original_size), self.original_size
            )
            box_torch = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        if mask_input is not None:
            mask = check_mask_input(mask_input, self._low_res_size)
            mask_torch = torch.as_tensor(mask, dtype=torch.float, device=self.device)[None]
        if coords_torch is None and box_torch is None and mask_torch is None:
            raise ValueError("no prompt: give point_coords/point_labels, box or mask_input")
        return coords_torch, labels_torch, box_torch, mask_torch

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Batched prompts already in the resized (1024) frame.

        point_coords B x N x 2, point_labels B x N, boxes B x 4, mask_input B x 1 x 256 x 256.
        Returns masks B x C x H x W, iou B x C, low-res logits B x C x 256 x 256.
        """
        low_res, iou = self._decode_low_res(
            point_coords, point_labels, boxes, mask_input, multimask_output=multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def _decode_low_res(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None,
        mask_input: Tensor | None,
        *,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        """Prompt encoder + mask decoder: low-res logits B x C x 256 x 256 and iou B x C."""
        if not self.is_image_set or self.features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        batch = self._check_torch_prompts(point_coords, point_labels, boxes, mask_input)
        if batch == 0:
            raise ValueError("no prompt: give point_coords/point_labels, boxes or mask_input")
        points = None
        if point_coords is not None and point_labels is not None:
            points = (point_coords, point_labels)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            deferred_shuffle=defer_shuffle_on(self.features.device),
        )
        return low_res, iou

    def _check_torch_prompts(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None,
        mask_input: Tensor | None,
    ) -> int:
        """Shapes only (values stay on the device); returns the prompt batch size, 0 if none."""
        sizes: dict[str, int] = {}
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is not None and point_labels is not None:
            if point_coords.ndim != 3 or point_coords.shape[2] != 2:
                raise ValueError(f"point_coords must be B x N x 2, got {tuple(point_coords.shape)}")
            if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
                raise ValueError(
                    f"point_labels must be {tuple(point_coords.shape[:2])}, "
                    f"got {tuple(point_labels.shape)}"
                )
            sizes["point_coords"] = int(point_coords.shape[0])
        if boxes is not None:
            if (
                boxes.shape[-1] != 4
                or boxes.ndim not in (2, 3)
                or boxes.numel() != 4 * boxes.shape[0]
            ):
                raise ValueError(f"boxes must be B x 4, got {tuple(boxes.shape)}")
            sizes["boxes"] = int(boxes.shape[0])
        if mask_input is not None:
            wanted = (1, *self._low_res_size)
            if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != wanted:
                raise ValueError(
                    f"mask_input must be B x {' x '.join(map(str, wanted))}, "
                    f"got {tuple(mask_input.shape)}"
                )
            sizes["mask_input"] = int(mask_input.shape[0])
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        return next(iter(sizes.values()), 0)

    def get_image_embedding(self) -> Tensor:
        """The current image's embedding, 1 x 256 x 64 x 64."""
        if not self.is_image_set or self.features is None:
            raise RuntimeError(
                "An image must be set with .set_image(...) to generate an embedding."
            )
        return self.features


def upscale_masks(
    low_res: Tensor, input_size: tuple[int, int], original_size: tuple[int, int], image_size: int
) -> Tensor:
    """B x C x h x w low-res logits -> B x C x H x W: the values of `Sam.postprocess_masks`.

    The same two bilinear resizes (to the padded ``image_size`` square, crop to `input_size`,
    to `original_size`), but when ``image_size`` is a whole multiple of the low-res side the
    first one reads only the low-res rows and columns that the crop keeps, plus one for the
    last kept pixels' lower / right neighbour: at the same scale factor every kept pixel has
    the same source indices and weights, so the padding of a non-square image is never
    upsampled and the values are identical (the tests compare bit for bit).
    """
    keep = (int(input_size[0]), int(input_size[1]))
    sides = (int(low_res.shape[-2]), int(low_res.shape[-1]))
    if all(image_size % side == 0 for side in sides):
        factors = [image_size // side for side in sides]
        rows, cols = (
            min(side, -(-extent // factor) + 1)
            for side, extent, factor in zip(sides, keep, factors, strict=True)
        )
        low_res = low_res[..., :rows, :cols]
        target = (rows * factors[0], cols * factors[1])
    else:
        target = (image_size, image_size)
    logits = nnf.interpolate(low_res, target, mode="bilinear", align_corners=False)
    logits = logits[..., : keep[0], : keep[1]]
    size = (int(original_size[0]), int(original_size[1]))
    return nnf.interpolate(logits, size, mode="bilinear", align_corners=False)
