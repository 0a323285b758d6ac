"""The SAM network, one module per file: image encoder, prompt encoder, mask decoder, `Sam`."""

from engine.sam.modeling.image_encoder import ImageEncoderViT
from engine.sam.modeling.mask_decoder import MaskDecoder
from engine.sam.modeling.prompt_encoder import PromptEncoder
from engine.sam.modeling.sam import Sam
from engine.sam.modeling.two_way_transformer import TwoWayTransformer

__all__ = ["ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TwoWayTransformer"]
