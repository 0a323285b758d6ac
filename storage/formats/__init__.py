"""Streaming dataset writers that take plain dict records and know nothing of Django rows."""

from storage.formats.coco import CocoWriter
from storage.formats.sa1b import SA1B_ANNOTATION_FIELDS, SA1B_IMAGE_FIELDS, Sa1bShardWriter

__all__ = ["SA1B_ANNOTATION_FIELDS", "SA1B_IMAGE_FIELDS", "CocoWriter", "Sa1bShardWriter"]
