"""Deploying a student: a stock fairseq checkpoint, a CTranslate2 model, a fast translator."""

from .ct2_export import QUANTIZATIONS, Manifest, export_ctranslate2, read_manifest
from .stock import export_stock
from .translator import TranslateStats, Translator

__all__ = [
    "QUANTIZATIONS",
    "Manifest",
    "TranslateStats",
    "Translator",
    "export_ctranslate2",
    "export_stock",
    "read_manifest",
]
