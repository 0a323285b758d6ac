"""Scripts that produce reference outputs with the official segment-anything package."""
