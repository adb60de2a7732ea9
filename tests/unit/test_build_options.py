"""seqkd-build's options for where targets come from (distill/build_options.py): a teacher or
translations, monolingual text; each bad combination refused in one line."""

from __future__ import annotations

import pytest

from fairseq_seqkd.distill.build_options import BuildOptions
from fairseq_seqkd.errors import SeqKDError


def options(**kwargs) -> BuildOptions:
    return BuildOptions(**{"data": "d", "teacher": "t.pt", "output": "o", "strategy": "seq-kd",
                           **kwargs})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"teacher": None}, r"give --teacher \(a fairseq checkpoint or a CTranslate2 model "
                        r"directory\) or --translations"),
    ({"translations": "t.txt"}, r"--translations replaces the teacher"),
    ({"teacher": None, "translations": "t.txt", "min_score": -1.0}, r"^--min-score drops"),
    ({"teacher": None, "translations": "t.txt", "filter_worst": 5}, r"^--filter-worst drops"),
    ({"teacher": None, "translations": "t.txt", "strategy": "seq-inter"},
     r"^--strategy seq-inter picks among the teacher's n-best"),
    ({"teacher": None, "translations": "t.txt", "nbest": 3}, r"^--nbest 3 asks for"),
    ({"teacher": None, "translations": "t.txt", "mono_source": ["m"]},
     r"--mono-source with --translations needs --mono-translations"),
    ({"mono_translations": ["x"], "mono_source": ["m"]},
     r"--mono-translations comes with --translations"),
    ({"teacher": None, "translations": "t.txt", "mono_translations": ["x"]},
     r"--mono-translations needs --mono-source"),
    ({"mono_size": 10}, r"--mono-size needs --mono-source"),
    ({"mono_source": ["m"], "mono_size": 0}, r"--mono-size must be >= 1, got 0"),
    ({"spm_model": "s.model"}, r"--spm-model segments the text of --mono-source and "
                               r"--translations"),
    ({"teacher_quantization": "int3"}, r"--teacher-quantization must be one of default, "),
    ({"teacher_threads": -1}, r"--teacher-threads must be >= 0"),
    ({"split": "mono", "mono_source": ["m"]}, r"--split mono is the monolingual split's own"),
])
def test_bad_combinations_are_refused_in_one_line(kwargs, message):
    with pytest.raises(SeqKDError, match=message) as info:
        options(**kwargs).check(lambda _: None)
    assert "\n" not in str(info.value)


def test_seq_inter_with_mono_text_says_once_that_it_takes_the_best_hypothesis():
    said: list[str] = []
    opts = options(strategy="seq-inter", mono_source="mono.txt")  # one path from Python
    opts.check(said.append)
    assert opts.mono_source == ["mono.txt"] and opts.nbest == 5
    assert said == ["warning: --strategy seq-inter picks the hypothesis closest to the "
                    "reference, and --mono-source text has none: its sentences get the "
                    "teacher's best hypothesis"]


def test_translations_need_no_teacher_and_take_one_hypothesis():
    opts = options(teacher=None, translations="t.txt", mono_source=["a", "b"],
                   mono_translations=["ta", "tb"], spm_model="s.model")
    opts.check(lambda _: None)
    assert opts.nbest == 1 and opts.mono
