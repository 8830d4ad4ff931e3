#!/usr/bin/env bash
# The test command: sets up everything a fresh machine needs (Python environment, container
# engine, images), then runs the whole suite in three tiers:
#   1. unit tests, in parallel on every core (pytest-xdist): independent, no engine needed;
#   2. integration, end-to-end and fault tests, one at a time (real engine, storage, servers);
#   3. the cluster tier (tests/cluster): a server, two worker hosts and an S3 store host in network
#      namespaces, and faults of whole hosts and links; needs root, skipped (saying why) elsewhere.
# Exits non-zero when any test of any tier fails; each tier prints its 15 slowest tests.
#
#   scripts/test.sh               everything (CI runs exactly this)
#   scripts/test.sh --quick       the unit tier only: a developer's loop (under 3 minutes)
#   scripts/test.sh PATH... [-k]  extra arguments go to pytest, which runs just those (one tier)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then
  quick=1
  shift
fi
eval "$(scripts/setup.sh)"
PYTEST=(.venv/bin/python -m pytest -ra --durations=15)
if [ $# -gt 0 ] && [ $quick = 0 ]; then
  exec "${PYTEST[@]}" "$@"
fi
rc=0
"${PYTEST[@]}" tests/unit -n auto "$@" || rc=1
if [ $quick = 0 ]; then
  "${PYTEST[@]}" tests --ignore=tests/unit --ignore=tests/cluster "$@" || rc=1
  "${PYTEST[@]}" tests/cluster "$@" || rc=1
fi
exit $rc
