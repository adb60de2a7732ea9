#!/usr/bin/env bash
# Download Multi30k task 1 (English-German, raw text) into the layout `make multi30k` reads,
# and check every file against the SHA256 sums below.
#
#   examples/multi30k/get_data.sh [DEST]     # default: runs/data/multi30k-en-de in the repository
#
# Source: the public repository multi30k/dataset, files data/task1/raw/*.gz (Elliott et al.
# 2016, "Multi30K: Multilingual English-German Image Descriptions"; partly derived from
# Flickr30K, for non-commercial research and educational use: see that repository's README).
# Written to DEST as raw text, one sentence a line, line N of .src (en) aligned with line N of
# .tgt (de):
#
#   train.{src,tgt}             29,000  train
#   valid.{src,tgt}              1,014  val
#   test.{src,tgt}               1,000  test_2016_flickr (the usual test set)
#   test_2017_flickr.{src,tgt}   1,000
#   test_2018_flickr.{src,tgt}   1,071
#
# A file already in DEST with the right sum is kept; any other is downloaded, decompressed to a
# temporary name, checked, then renamed into place, so DEST never holds an unchecked file.
# MULTI30K_URL replaces the base URL (a mirror, or a file:// copy of the .gz files).
set -euo pipefail
PROG=get_data.sh
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${MULTI30K_URL:-https://github.com/multi30k/dataset/raw/master/data/task1/raw}
DEST=${1:-$REPO/runs/data/multi30k-en-de}

die() { echo "$PROG: error: $*" >&2; exit 1; }

# repository file -> our name, and the SHA256 of the decompressed text
FILES="\
train.en.gz             train.src             460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6
train.de.gz             train.tgt             2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72
val.en.gz               valid.src             1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227
val.de.gz               valid.tgt             660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660
test_2016_flickr.en.gz  test.src              399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182
test_2016_flickr.de.gz  test.tgt              4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16
test_2017_flickr.en.gz  test_2017_flickr.src  ce1450ddc5ab0834502579d77a170849952e15a2938b34cc503bdc25ebb4fb98
test_2017_flickr.de.gz  test_2017_flickr.tgt  c3078bc3b36808bf9d20eb2347ed6137016179ef59ec0d2b9b8ecc3fb2880081
test_2018_flickr.en.gz  test_2018_flickr.src  4e585c2dd525911a6ea7730e9d0b516239af3f1b1ffae6a2130223cfb639f25e
test_2018_flickr.de.gz  test_2018_flickr.tgt  39fcc8b3331d76fb42d648d019c6898b0d5e58baac87bc2a0bb93f44ec8db207"

command -v curl >/dev/null || die "curl is needed to download the files"
if command -v sha256sum >/dev/null; then
    sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif command -v shasum >/dev/null; then
    sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
    die "sha256sum or shasum is needed to check the files"
fi

mkdir -p "$DEST" || die "cannot create $DEST"
TMP=
trap '[[ -z $TMP ]] || rm -rf "$TMP"' EXIT

fetched=0 kept=0
while read -r gz name want; do
    if [[ -f $DEST/$name && $(sha256 "$DEST/$name") == "$want" ]]; then
        kept=$((kept + 1))
        continue
    fi
    [[ -n $TMP ]] || TMP=$(mktemp -d "$DEST/.get_data.XXXXXX") || die "cannot write in $DEST"
    curl -fsSL --retry 3 -o "$TMP/$gz" "$BASE/$gz" 2>/dev/null || die "cannot download $BASE/$gz"
    gzip -dc "$TMP/$gz" >"$TMP/$name" 2>/dev/null || die "$gz is not a gzip file"
    got=$(sha256 "$TMP/$name")
    [[ $got == "$want" ]] \
        || die "$gz: SHA256 of its text is $got, expected $want; $name not written"
    mv "$TMP/$name" "$DEST/$name"
    rm -f "$TMP/$gz"
    fetched=$((fetched + 1))
done <<<"$FILES"
echo "$PROG: $DEST: Multi30k task 1 en-de checked ($fetched files downloaded, $kept already there)"
