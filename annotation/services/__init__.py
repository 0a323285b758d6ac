"""Annotation services (all writes), split by subdomain: projects, ingest, masks, export."""
