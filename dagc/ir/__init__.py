"""IR: a `Spec` at one width -> blocks in topological order, connections, scales, layout."""
