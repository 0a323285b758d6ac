"""Framework-free Segment Anything (modeling, checkpoints, predictor, automatic generator).

No Django, Celery or settings imports here (an import-linter contract enforces it). The model
code itself arrives with issue 3.
"""
