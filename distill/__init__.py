"""distill: the teacher zoo, pretrained-weight loading and (later) the distillation trainer."""
