"""Metrics: the registry of what a sweep cell measures, one module per family."""
