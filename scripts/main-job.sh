#!/usr/bin/env bash
# The README's main job: the PyTorch reference application (torchfit) end to end.
# Builds what is needed (Python env, container engine, images; each skipped when present),
# puts the sample data and config in the job store, runs `train`, then `predict` with the
# trained model (--artifact jobs/<id>/artifact), and prints where the outputs are.
#
#   scripts/main-job.sh                 # CPU (a GPU is used when the job gets one)
#   scripts/main-job.sh --gpu 1         # extra arguments go to the train job
#
# Uses JOBCLOUD_HOME / JOBCLOUD_STORAGE when set (default ~/.jobcloud).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
jc() { .venv/bin/python -m jobcloud.deployments.cli "$@"; }

jc images build torchfit --quiet
SAMPLE=images/torchfit/sample
jc files put "$SAMPLE/data" "$SAMPLE/config.yaml" samples/torchfit >/dev/null
echo "== train: torchfit/v1/train on samples/torchfit/data with samples/torchfit/config.yaml" >&2
jc run torchfit/v1/train --config samples/torchfit/config.yaml --data samples/torchfit/data \
  --local --json "$@" > "${TMPDIR:-/tmp}/jobcloud-main-train.json" || {
  echo "train failed:" >&2; cat "${TMPDIR:-/tmp}/jobcloud-main-train.json" >&2; exit 1; }
TRAIN=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "${TMPDIR:-/tmp}/jobcloud-main-train.json")
echo "== predict: torchfit/v1/predict with --artifact jobs/$TRAIN/artifact" >&2
jc run torchfit/v1/predict --artifact "jobs/$TRAIN/artifact" --data samples/torchfit/data \
  --local --json > "${TMPDIR:-/tmp}/jobcloud-main-predict.json" || {
  echo "predict failed:" >&2; cat "${TMPDIR:-/tmp}/jobcloud-main-predict.json" >&2; exit 1; }
PREDICT=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "${TMPDIR:-/tmp}/jobcloud-main-predict.json")

STORE=$(.venv/bin/python -c 'from jobcloud.blocks.settings import get_settings; print(get_settings().storage_url)')
UI=$(jc server status 2>/dev/null | sed -n 's|^running at \(.*\)/api$|\1|p')
cat <<MSG

train   job $TRAIN: model in jobs/$TRAIN/artifact/, metrics + loss_curve.png in jobs/$TRAIN/output/, log in jobs/$TRAIN/log/
predict job $PREDICT: predictions in jobs/$PREDICT/output/predictions.csv
job store: $STORE
download:  jobcloud files get jobs/$TRAIN/output DIR   (or: jobcloud jobs outputs $TRAIN DIR)
Prefect UI: ${UI:-"(start it with: jobcloud server start)"}/runs/flow-run/$TRAIN  (the loss curve is under Artifacts)
MSG
