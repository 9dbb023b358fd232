"""compress: exact structural re-parameterization (reparam, blocks), channel pruning (graph, prune), iterative
prune + distillation fine-tune (iterative) and deployment (deploy).

Importing the package registers the transform that rebuilds compressed networks from their specs
(`reparameterized`, `widths`; see srcore.registry), so `srcore.modelspec.load_checkpoint_model` can load them.
"""
from . import prune  # noqa: F401  (registers the spec transform)
