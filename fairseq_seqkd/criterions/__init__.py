"""fairseq criterions of the plugin; importing this package registers them."""

from . import gkd, seq_kd_interpolation, word_kd  # noqa: F401
