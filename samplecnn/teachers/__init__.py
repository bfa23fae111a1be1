"""Teacher models: pretrained taggers from other projects, ported to PyTorch, used as references and as soft-label
sources for distillation. Their weights stay in the packages that distribute them; nothing is copied in here."""
