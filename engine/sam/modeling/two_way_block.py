"""One layer of the two-way transformer: tokens attend to themselves, to the image, and back."""

from torch import Tensor, nn

from engine.sam.modeling.layers import MLPBlock
from engine.sam.modeling.token_attention import Attention


class TwoWayAttentionBlock(nn.Module):
    """Self-attention on tokens, token->image cross-attention, MLP, image->token cross-attention.

    The first layer feeds the tokens without their positional encoding to its self-attention
    (`skip_first_layer_pe`).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        """queries: B x Nt x C (tokens), keys: B x HW x C (image) -> updated (queries, keys).

        keys and key_pe may also be 1 x HW x C, one image shared by the B prompts: the
        image-side projections then run once instead of B times (`forward_shared_kv`,
        `forward_shared_q`), and the returned keys are B x HW x C as with repeated keys.
        """
        shared = keys.shape[0] == 1 and queries.shape[0] > 1
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        if shared:
            queries = queries + self.cross_attn_token_to_image.forward_shared_kv(q=q, k=k, v=keys)
        else:
            queries = queries + self.cross_attn_token_to_image(q=q, k=k, v=keys)
        queries = self.norm2(queries)

        queries = queries + self.mlp(queries)
        queries = self.norm3(queries)

        q = queries + query_pe  # k (keys + key_pe) is unchanged since the token->image step
        if shared:
            keys = keys + self.cross_attn_image_to_token.forward_shared_q(q=k, k=q, v=queries)
        else:
            keys = keys + self.cross_attn_image_to_token(q=k, k=q, v=queries)
        keys = self.norm4(keys)
        return queries, keys
