"""The decoder's two-way transformer between prompt tokens and the image embedding."""

from torch import Tensor, nn

from engine.sam.modeling.token_attention import Attention
from engine.sam.modeling.two_way_block import TwoWayAttentionBlock


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks, then a final token->image attention and LayerNorm."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(index == 0),
            )
            for index in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor
    ) -> tuple[Tensor, Tensor]:
        """image_embedding, image_pe: B x C x H x W; point_embedding: B x Nt x C.

        Returns the processed tokens B x Nt x C and image keys B x HW x C. image_pe may be
        1 x C x H x W (broadcast); so may image_embedding when all B prompts share it, in which
        case the first block projects it once (see `TwoWayAttentionBlock.forward`).
        """
        # Copied once into token-major order: as permuted views, every later add and LayerNorm
        # on the B x HW x C keys strode across channels (or mixed the two layouts), which made
        # a vit_b-sized decode 45 -> 37 ms on 2 CPU cores. Same values.
        keys = image_embedding.flatten(2).permute(0, 2, 1).contiguous()
        key_pe = image_pe.flatten(2).permute(0, 2, 1).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(
                queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe
            )
        q = queries + point_embedding
        k = keys + key_pe
        queries = queries + self.final_attn_token_to_image(q=q, k=k, v=keys)
        return self.norm_final_attn(queries), keys
