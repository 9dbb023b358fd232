"""distill: the teacher zoo, pretrained-weight loading and the distillation trainer.

Importing the package registers every zoo architecture (srcore.registry), explicitly, through distill.zoo.
"""
from . import zoo  # noqa: F401  (registers the zoo architectures)
