"""FairseqDecoder: fairseq-generate's pipeline in this process gives fairseq-generate's output."""

import pytest

from fairseq_seqkd.deploy.fairseq_decoder import FairseqDecoder
from fairseq_seqkd.distill.evaluate import parse_decoding
from fairseq_seqkd.errors import SeqKDError

from ..conftest import PLUGIN, run_cli

OPTIONS = ("--batch-size", "16", "--max-len-a", "1.5", "--max-len-b", "10", "--cpu",
           "--num-workers", "0", "--required-batch-size-multiple", "1")


@pytest.mark.slow
def test_same_hypotheses_and_token_counts_as_fairseq_generate(toy_bin, teacher_ckpt):
    decoder = FairseqDecoder(str(toy_bin), str(teacher_ckpt), ("test", "valid"), OPTIONS)
    for subset, beam, size in (("test", 1, 40), ("test", 3, 40), ("valid", 3, 60)):
        got = decoder.decode(beam, subset)  # one loaded model, two splits, two beams
        proc = run_cli("fairseq-generate", toy_bin, "--user-dir", PLUGIN, "--path",
                       teacher_ckpt, "--gen-subset", subset, "--beam", beam, *OPTIONS)
        expected = parse_decoding(proc.stdout + proc.stderr)
        assert got.hypotheses == expected.hypotheses and got.sentences == size
        assert got.tokens == expected.tokens  # </s> counted, as fairseq-generate counts
        assert got.seconds > 0
    # the first output of the toy teacher must not be trivially empty for this to mean much
    assert sum(bool(h) for h in got.hypotheses) > 30


def test_a_missing_checkpoint_is_one_line_naming_it(toy_bin, tmp_path):
    with pytest.raises(SeqKDError, match=r"--path: .*nope\.pt does not exist"):
        FairseqDecoder(str(toy_bin), str(tmp_path / "nope.pt"), ("test",), OPTIONS)
