"""Prompt encoder: points, boxes and a low-resolution mask -> sparse and dense embeddings."""

from typing import cast

import torch
from torch import Tensor, nn

from engine.sam.modeling.layers import LayerNorm2d
from engine.sam.modeling.position_encoding import PositionEmbeddingRandom

NUM_POINT_EMBEDDINGS = 4  # negative point, positive point, box top-left, box bottom-right


class PromptEncoder(nn.Module):
    """Embed prompts for the mask decoder.

    Point labels: 1 foreground, 0 background, -1 padding (not a point). A box is two corner
    points with their own learned embeddings. A mask prompt (B x 1 x 4H x 4W logits) is
    downscaled by two stride-2 convolutions; without one a learned no-mask embedding is
    broadcast over the H x W grid.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = NUM_POINT_EMBEDDINGS
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(NUM_POINT_EMBEDDINGS)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        quarter = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, quarter, kernel_size=2, stride=2),
            LayerNorm2d(quarter),
            activation(),
            nn.Conv2d(quarter, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: Tensor | None = None
        self._dense_pe_key: tuple[object, ...] = ()

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image embedding grid: 1 x C x 64 x 64.

        It depends only on the gaussian matrix, so it is computed once and reused until that
        buffer changes (new weights, another device or dtype); callers must not modify it.
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self.pe_layer(self.image_embedding_size).unsqueeze(0)
        key = (matrix.device, matrix.dtype, matrix.data_ptr(), matrix._version)
        if self._dense_pe is None or self._dense_pe_key != key:
            with torch.no_grad():
                self._dense_pe = self.pe_layer(self.image_embedding_size).unsqueeze(0)
            self._dense_pe_key = key
        return self._dense_pe

    def _point_weight(self, index: int) -> Tensor:
        return cast(nn.Embedding, self.point_embeddings[index]).weight

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """points: B x N x 2 (input-frame pixels), labels: B x N -> B x N(+1) x C."""
        points = points + 0.5  # move to the pixel centre
        if pad:
            pad_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
            pad_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, pad_point], dim=1)
            labels = torch.cat([labels, pad_label], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        embedding[labels == -1] = 0.0
        embedding[labels == -1] += self.not_a_point_embed.weight
        embedding[labels == 0] += self._point_weight(0)
        embedding[labels == 1] += self._point_weight(1)
        return embedding

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """boxes: B x 4 xyxy (input-frame pixels) -> B x 2 x C."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        embedding[:, 0, :] += self._point_weight(2)
        embedding[:, 1, :] += self._point_weight(3)
        return embedding

    def _batch_size(
        self, points: tuple[Tensor, Tensor] | None, boxes: Tensor | None, masks: Tensor | None
    ) -> int:
        if points is not None:
            return int(points[0].shape[0])
        if boxes is not None:
            return int(boxes.shape[0])
        if masks is not None:
            return int(masks.shape[0])
        return 1

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None,
        masks: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Sparse embeddings B x N x C and dense embeddings B x C x H x W.

        points: (coords B x N x 2, labels B x N); boxes: B x 4; masks: B x 1 x 256 x 256.
        N = points (+1 padding point when there is no box) + 2 per box.
        """
        batch = self._batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((batch, 0, self.embed_dim), device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            height, width = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)
        return sparse, dense
