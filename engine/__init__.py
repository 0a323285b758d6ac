"""The data engine: stages, the model registry, jobs and inference services."""
