#!/bin/sh
# Regenerate ivr/prompts/zh/<id>.wav from ivr/prompts/texts.yaml with a Mandarin synthetic voice.
# Telephone audio: 8 kHz, 16-bit, mono (what the gateway plays into a call without resampling).
# Needs espeak-ng (voice cmn) and sox; both are Debian packages. Usage: make_prompts.sh [ID...]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/zh"
speed=${ESPEAK_SPEED:-210}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$here/texts.yaml" "$@" > "$tmp/list" <<'PY'
import sys, yaml
texts = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
wanted = sys.argv[2:] or list(texts)
for key in wanted:
    print(f"{key}\t{' '.join(str(texts[key]).split())}")
PY

while IFS="$(printf '\t')" read -r id text; do
    espeak-ng -v cmn -s "$speed" -w "$tmp/raw.wav" "$text"
    # gain -n -1: normalise just below full scale so resampling never clips
    # silence ... reverse ...: trim leading and trailing silence (smaller files, no dead air)
    sox -q "$tmp/raw.wav" -r 8000 -b 16 -c 1 "$out/$id.wav" gain -n -1 \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
    echo "$out/$id.wav"
done < "$tmp/list"
