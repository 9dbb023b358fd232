"""compress: structural re-parameterization and channel pruning (later issue)."""
