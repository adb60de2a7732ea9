"""fairseq checkpoints load with weights_only=True; a pickle payload is still refused."""

import argparse
import os
import pickle

import pytest
import torch
from fairseq import checkpoint_utils

import fairseq_seqkd  # noqa: F401  (the import allow-lists fairseq's checkpoint globals)
from fairseq_seqkd.errors import SeqKDError
from fairseq_seqkd.safe_load import FAIRSEQ_CHECKPOINT_GLOBALS
from fairseq_seqkd.teacher import load_checkpoint_state


class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_allow_list_is_exactly_namespace() -> None:
    assert (argparse.Namespace,) == FAIRSEQ_CHECKPOINT_GLOBALS
    assert argparse.Namespace in torch.serialization.get_safe_globals()
    assert os.system not in torch.serialization.get_safe_globals()


def test_legacy_namespace_checkpoint_loads_with_weights_only(tmp_path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"args": argparse.Namespace(arch="transformer", lr=[0.1]),
                "model": {"w": torch.ones(2)}}, path)
    state = torch.load(path, weights_only=True)
    assert state["args"].arch == "transformer" and torch.equal(state["model"]["w"], torch.ones(2))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_malicious_checkpoint_is_refused(tmp_path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"args": Payload(str(marker)), "model": {}}, path, pickle_protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    with pytest.raises(SeqKDError, match=r"evil.pt is not a fairseq checkpoint"):
        load_checkpoint_state(str(path))
    assert not marker.exists()
