"""Ops: the activation registry (value, derivatives, Gaussian expectations)."""
