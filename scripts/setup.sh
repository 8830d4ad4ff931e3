#!/usr/bin/env bash
# Everything a fresh machine needs: the Python environment, PostgreSQL (for the team-server
# tests), a container engine, the images.
# Idempotent: a second run only checks. Source-able output: prints `export DOCKER_HOST=...`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The stamp covers the declared ranges and the tested pins: a change to either reinstalls.
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.jobcloud-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "installing JobCloud and its pins into .venv ..." >&2
  .venv/bin/pip install -q -e ".[test,s3]" -c constraints.txt >&2
  echo "$stamp" > .venv/.jobcloud-stamp
fi
# torchfit's own unit tests (tests/unit/test_torchfit_*.py) run its code on the host: the CPU
# wheel that $PIP_FIND_LINKS holds, never PyPI's several-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    echo "installing torch 2.13.0 (CPU) into .venv ..." >&2
    .venv/bin/pip install -q "torch==2.13.0+cpu" -c constraints.txt >&2
  else
    echo "no local CPU torch wheel in \$PIP_FIND_LINKS: torchfit's host-side unit tests are skipped" >&2
  fi
fi
# PostgreSQL from Debian's packages: the team-server test and bench start a throwaway cluster
# from its binaries (tests/integration/postgres.py). Installed like the engine: as root on Debian.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing postgresql ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  else
    echo "PostgreSQL is missing and cannot be installed here (not root, or no apt-get):" \
      "apt-get install postgresql, or tests/e2e/test_team_postgres.py fails" >&2
  fi
fi
# libfaketime: the fault suite runs a worker whose clock is 5 minutes off (fencing counts on
# the host's monotonic clock, so a skewed wall clock must change nothing).
if ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing faketime ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >&2 || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >&2; }
  else
    echo "libfaketime is missing (apt-get install faketime): the clock-skew fault case is skipped" >&2
  fi
fi
DOCKER_HOST=$(scripts/engine.sh)
export DOCKER_HOST
.venv/bin/python -m jobcloud.deployments.imaging.build >&2
# Workflow managers with a TES executor (cwl-tes, Snakemake) for
# tests/e2e/test_tes_workflow_manager.py, in their own venvs under .venv-wfm (old, conflicting
# pins), and the image Snakemake's tasks run in. A failed install does not stop the setup (the
# rest of the suite still runs); that test module then fails, naming what is missing.
if ! scripts/setup-wfm.sh >&2; then
  echo "scripts/setup-wfm.sh failed: tests/e2e/test_tes_workflow_manager.py will fail" >&2
fi
echo "export DOCKER_HOST=$DOCKER_HOST"
