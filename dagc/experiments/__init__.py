"""Experiments: sweep cells, the results store, executors (local, Dask) and reports."""
