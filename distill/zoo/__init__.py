"""The teacher zoo: our implementations of published efficient-SR networks.

Each file registers its factories with `srcore.registry.register`; importing this package imports every
file explicitly (no folder scanning), after which `create(name, scale)` builds any of them.
"""
from srcore.registry import create, get_entry, list_models

from . import a2n, carn, edsr, imdn, pan, pfdn, rcan, rfdn, rlfn, span, spanv2  # noqa: F401  (registers the models)

__all__ = ["create", "get_entry", "list_models"]
