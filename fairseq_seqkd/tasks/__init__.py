"""fairseq tasks of the plugin; importing this package registers them."""

from . import translation_kd  # noqa: F401
