"""Deploying a student: a stock fairseq checkpoint, a CTranslate2 model, a fast translator."""
