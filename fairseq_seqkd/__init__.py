"""fairseq-seqkd: knowledge distillation for fairseq, loaded with ``--user-dir fairseq_seqkd``.

Importing the package registers its criterions and tasks with fairseq and allow-lists the
globals that fairseq checkpoints pickle, so ``torch.load(weights_only=True)`` (the default
since torch 2.6) reads them without ever turning ``weights_only`` off. Inside a fairseq console
script (``fairseq-train --user-dir fairseq_seqkd``) it also makes the plugin's option errors
one line instead of a traceback; imported anywhere else it leaves ``sys.excepthook`` alone.
"""

from . import clean_exit
from .errors import install_error_hook_in_fairseq_cli
from .safe_load import allow_fairseq_checkpoint_globals

allow_fairseq_checkpoint_globals()
install_error_hook_in_fairseq_cli()
clean_exit.register()  # fairseq's prefetch threads would abort the exit (status 134)

from . import criterions, tasks  # noqa: E402,F401  (registers word_kd, translation_kd, ...)
