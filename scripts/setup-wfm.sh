#!/usr/bin/env bash
# Workflow managers with a GA4GH TES executor, for tests/e2e/test_tes_workflow_manager.py, each in
# its own virtualenv under .venv-wfm/ (they pin old packages that conflict with JobCloud's and
# with each other's: cwl-tes 0.3.0 pins cwltool 1.0.20191022103248 and takes py-tes 1.x,
# snakemake-executor-plugin-tes 0.1.3 pins py-tes < 0.5), never in .venv:
#   .venv-wfm/cwl-tes     cwl-tes 0.3.0            (constraints-wfm-cwl.txt)
#   .venv-wfm/snakemake   Snakemake 9 + TES + S3   (constraints-wfm-snakemake.txt)
# and, where DOCKER_HOST names an engine, the image Snakemake's TES tasks run in
# (localhost/jobcloud/wfm-snakemake, images/wfm-snakemake).
# Idempotent: a stamp per venv (its pins and this script), the image builder's own recipe hash.
# Called by scripts/setup.sh; exits non-zero (saying what) when an install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rc=0

# fresh VENV PINS: true when VENV must be (re)made; removes the old one then.
fresh() {
  local stamp
  stamp=$(cat "$2" "$0" | sha256sum | cut -c1-16)
  if [ "$(cat "$1/.wfm-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 1
  fi
  rm -rf "$1"
  "$PY" -m venv "$1"
  echo "$stamp" > "$1/.wfm-stamp.new"
}
done_stamp() { mv "$1/.wfm-stamp.new" "$1/.wfm-stamp"; }

install_cwl_tes() {
  local venv=.venv-wfm/cwl-tes pins=constraints-wfm-cwl.txt
  fresh "$venv" "$pins" || return 0
  echo "installing cwl-tes into $venv ..." >&2
  local pip=("$venv/bin/pip" install -q -c "$pins")
  # rdflib 4.2.2 and rdflib-jsonld 0.4.0 (cwltool 2019's schema-salad) ship only sdists whose
  # setup.py calls setuptools' 2to3 hook, removed in setuptools 58: built in pip's isolated
  # environment (newest setuptools) they fail with "distutils.util has no attribute
  # run_2to3". Build those two against the pinned old setuptools of the venv instead.
  # (Chained with &&: `set -e` does not hold in a function called left of `||`.)
  "${pip[@]}" setuptools wheel \
    && "${pip[@]}" --no-build-isolation rdflib rdflib-jsonld \
    && "${pip[@]}" cwl-tes \
    && "$venv/bin/cwl-tes" --version >&2 \
    && done_stamp "$venv"
}

install_snakemake() {
  local venv=.venv-wfm/snakemake pins=constraints-wfm-snakemake.txt
  fresh "$venv" "$pins" || return 0
  echo "installing snakemake and its TES executor into $venv ..." >&2
  "$venv/bin/pip" install -q -c "$pins" snakemake snakemake-executor-plugin-tes snakemake-storage-plugin-s3 \
    && "$venv/bin/snakemake" --version >&2 \
    && done_stamp "$venv"
}

mkdir -p .venv-wfm
install_cwl_tes || { echo "scripts/setup-wfm.sh: installing cwl-tes failed" >&2; rc=1; }
install_snakemake || { echo "scripts/setup-wfm.sh: installing snakemake failed" >&2; rc=1; }
if [ -n "${DOCKER_HOST:-}" ]; then
  .venv/bin/python -m jobcloud.deployments.imaging.build wfm-snakemake >&2 \
    || { echo "scripts/setup-wfm.sh: building localhost/jobcloud/wfm-snakemake failed" >&2; rc=1; }
fi
exit $rc
