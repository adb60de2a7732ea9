"""fairseq criterions of the plugin; importing this package registers them."""

from . import word_kd  # noqa: F401
