"""Retrain rounds: dataset snapshots, the training loop and evaluation (issue 5)."""
