"""Sequence-level knowledge distillation data modules (n-best files, target selection)."""
