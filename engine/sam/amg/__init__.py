"""The automatic mask generator (grid prompts over crops, filtering, NMS, RLE records)."""

from engine.sam.amg.generator import SamAutomaticMaskGenerator
from engine.sam.amg.settings import sa1b_generator_settings

__all__ = ["SamAutomaticMaskGenerator", "sa1b_generator_settings"]
