"""Let torch >= 2.6 read fairseq checkpoints with ``weights_only=True``.

A fairseq checkpoint pickles plain containers and tensors, plus the legacy
``argparse.Namespace`` of its training arguments (``state["args"]``). Allow-listing exactly
that class keeps the safe unpickler on: anything else (for example an ``os.system`` payload)
is still refused.
"""

import argparse

import torch

FAIRSEQ_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def allow_fairseq_checkpoint_globals() -> None:
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 has no safe unpickler to configure
        add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))
