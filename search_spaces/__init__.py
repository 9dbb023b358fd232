"""search_spaces: cell- and network-level SR search spaces, genotypes and derived networks.

Importing the package registers the derived network's builder for `{"genotype": ...}` checkpoint specs
(srcore.registry), explicitly, here.
"""
from . import network  # noqa: F401  (registers the "genotype" spec builder)
