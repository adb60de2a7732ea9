"""fairseq-seqkd: sequence-level knowledge distillation as a fairseq --user-dir plugin."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# the one version string, in the package (stage stamps record it); read here without importing
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (HERE / "fairseq_seqkd" / "version.py").read_text(encoding="utf-8"), re.M)[1]

setup(
    name="fairseq-seqkd",
    version=VERSION,
    description=(
        "Kim & Rush (2016) sequence-level knowledge distillation for fairseq, "
        "as a --user-dir plugin"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["fairseq_seqkd", "fairseq_seqkd.*"]),
    # Upper bounds on the packages whose internals the plugin uses (fairseq's prefetch threads,
    # FP16Optimizer's master copies and indexed-dataset builder, sacrebleu's cached statistics,
    # CTranslate2's converter messages): tests/integration/test_private_apis.py names each one
    # and fails when a release removes it; raise a bound after that test passes on the release.
    install_requires=[
        # official fairseq 0.12.2 does not import on Python >= 3.11 (dataclass defaults);
        # fairseq-fixed repackages fairseq's main branch as the same `fairseq` module.
        "fairseq-fixed>=0.12.3,<0.13; python_version >= '3.11'",
        "fairseq>=0.12.2,<0.13; python_version < '3.11'",
        "torch>=2.1",
        "sacrebleu>=2.3,<3",
        "sentencepiece",
        "tqdm",
        "numpy",
        # fairseq's import logs "Please install tensorboardX" without it; it also backs
        # fairseq-train --tensorboard-logdir
        "tensorboardX",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "hypothesis", "ruff"],
        "plot": ["matplotlib"],
        # the served student: seqkd-export --format ctranslate2, seqkd-translate
        "deploy": ["ctranslate2>=4.5,<5"],
    },
    entry_points={
        "console_scripts": [
            "seqkd-path=fairseq_seqkd.cli.path:main",
            "seqkd-generate=fairseq_seqkd.cli.generate:main",
            "seqkd-select=fairseq_seqkd.cli.select:main",
            "seqkd-build=fairseq_seqkd.cli.build:main",
            "seqkd-prune=fairseq_seqkd.cli.prune:main",
            "seqkd-export=fairseq_seqkd.cli.export:main",
            "seqkd-translate=fairseq_seqkd.cli.translate:main",
            "seqkd-demo=fairseq_seqkd.cli.demo:main",
            "seqkd-benchmark=fairseq_seqkd.cli.benchmark:main",
            "seqkd-cache-teacher=fairseq_seqkd.cli.cache_teacher:main",
            "seqkd-evaluate=fairseq_seqkd.cli.evaluate:main",
        ],
    },
)
