"""search_spaces: cell- and network-level SR search spaces, genotypes and derived networks."""
