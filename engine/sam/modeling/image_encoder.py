"""The ViT image encoder: 1024 x 1024 image -> 256 x 64 x 64 embedding."""

from typing import cast

import torch
from torch import Tensor, nn

from engine.sam.modeling.layers import LayerNorm2d
from engine.sam.modeling.patch_embed import PatchEmbed
from engine.sam.modeling.vit_block import Block


class ImageEncoderViT(nn.Module):
    """Patch embedding + absolute positions, windowed/global blocks, and a convolutional neck."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
        use_sdpa: bool | None = None,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if index in global_attn_indexes else window_size,
                input_size=(grid, grid),
                use_sdpa=use_sdpa,
            )
            for index in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def set_sdpa(self, enabled: bool | None) -> None:
        """Attention kernel of every block: False explicit; True or None (default) SDPA, with
        the bias folded into q and k on the CPU (see engine/sam/modeling/vit_attention.py).
        """
        if enabled not in (True, False, None):
            raise ValueError(f"set_sdpa takes True, False or None, got {enabled!r}")
        for block in self.blocks:
            cast(Block, block).attn.use_sdpa = enabled

    def forward(self, x: Tensor) -> Tensor:
        """x: B x 3 x 1024 x 1024 (normalised, padded) -> B x 256 x 64 x 64."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
