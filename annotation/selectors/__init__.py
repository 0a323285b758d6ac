"""Annotation selectors (reads), split by subdomain."""
