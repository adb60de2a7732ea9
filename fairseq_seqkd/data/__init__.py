"""Datasets the plugin reads during ``fairseq-train``: distilled targets and the teacher cache."""
