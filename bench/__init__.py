"""Reproducible benchmarks; each module is a script (see its docstring)."""
