"""Blob stores (local filesystem, S3) and streaming dataset format writers (COCO, SA-1B).

This app imports no other maskloop app: it moves bytes and writes formats from plain records.
"""
