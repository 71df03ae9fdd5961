"""Frontend: architecture files (YAML, dicts, graph files) -> `Spec`; size expressions."""
