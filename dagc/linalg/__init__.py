"""Linear algebra on operators: Lanczos and Ritz values."""
