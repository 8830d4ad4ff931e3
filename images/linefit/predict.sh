#!/bin/sh
# Usage: predict.sh --model=FILE --data=CSV --out=DIR
set -eu
for arg in "$@"; do
  case "$arg" in
    --model=*) MODEL=${arg#--model=} ;;
    --data=*) DATA=${arg#--data=} ;;
    --out=*) OUT=${arg#--out=} ;;
  esac
done
[ -n "${MODEL:-}" ] && [ -f "$MODEL" ] || { echo "predict: no model.txt found (pass --artifact jobs/<id>/artifact)" >&2; exit 3; }
[ -n "${DATA:-}" ] && [ -f "$DATA" ] || { echo "predict: no data file found" >&2; exit 4; }
mkdir -p "$OUT"
A=$(awk -F= '$1=="a"{print $2}' "$MODEL"); B=$(awk -F= '$1=="b"{print $2}' "$MODEL")
awk -F, -v a="$A" -v b="$B" '/^[ \t]*#/ || NF < 1 || $1=="" { next } { printf "%s,%g\n", $1, a*$1+b }' "$DATA" > "$OUT/predictions.csv"
echo "predict: wrote $(wc -l < "$OUT/predictions.csv") predictions with a=$A b=$B"
