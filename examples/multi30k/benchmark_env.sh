# Sourced by run.sh and run_table1.sh (set DOC first): takes the corpus folder off the front of
# the caller's arguments and sets REPO, CORPUS (default ../shared/data/multi30k-en-de beside the
# repository), BENCH (the venv's seqkd-benchmark, else the one on PATH) and ANALYSIS (--analysis
# DOC-analysis.md when that file exists: the reasons behind the numbers, written after reading a
# run), then works from the repository root.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CORPUS=$REPO/../shared/data/multi30k-en-de
if [[ $# -gt 0 && $1 != -* ]]; then CORPUS=$1; shift; fi
BENCH=$REPO/.venv/bin/seqkd-benchmark
[[ -x $BENCH ]] || BENCH=$(command -v seqkd-benchmark) \
    || { echo "${0##*/}: seqkd-benchmark not found: run 'make venv' first" >&2; exit 1; }
cd "$REPO"
ANALYSIS=()
if [[ -f ${DOC%.md}-analysis.md ]]; then ANALYSIS=(--analysis "${DOC%.md}-analysis.md"); fi
