#!/bin/sh
# Usage: train.sh --data=CSV --config=YAML --model=DIR --out=DIR --log=DIR
# Fits y = a*x + b by least squares over every x,y row of the CSV; the config may set
# `scale: <number>` that multiplies the slope (to show a config is read).
set -eu
for arg in "$@"; do
  case "$arg" in
    --data=*) DATA=${arg#--data=} ;;
    --config=*) CONFIG=${arg#--config=} ;;
    --model=*) MODEL=${arg#--model=} ;;
    --out=*) OUT=${arg#--out=} ;;
    --log=*) LOG=${arg#--log=} ;;
  esac
done
[ -n "${DATA:-}" ] && [ -f "$DATA" ] || { echo "train: no data file found (give a .csv under data)" >&2; exit 3; }
[ -n "${CONFIG:-}" ] && [ -f "$CONFIG" ] || { echo "train: no config file found (give a .yaml as config)" >&2; exit 4; }
mkdir -p "$MODEL" "$OUT" "$LOG"
SCALE=$(awk -F': *' '$1=="scale"{print $2}' "$CONFIG"); SCALE=${SCALE:-1}
echo "train: data=$DATA config=$CONFIG scale=$SCALE epochs=${LINEFIT_EPOCHS:-1}"
awk -F, -v scale="$SCALE" '
  /^[ \t]*#/ || NF < 2 { next }
  { n++; sx+=$1; sy+=$2; sxx+=$1*$1; sxy+=$1*$2 }
  END {
    if (n < 2) { print "train: need at least two rows" > "/dev/stderr"; exit 5 }
    a = (n*sxy - sx*sy) / (n*sxx - sx*sx); b = (sy - a*sx) / n; a = a*scale
    printf "a=%g\nb=%g\nrows=%d\n", a, b, n
  }' "$DATA" > "$MODEL/model.txt"
cat "$MODEL/model.txt" > "$OUT/metrics.txt"
echo "trained on $(grep rows "$MODEL/model.txt")" | tee "$LOG/train.log"
