#!/usr/bin/env bash
# Screenshots of the Prefect UI for the docs: docs/screenshots/{runs,run,run-artifacts,
# deployments,run-form}.png. Run on a clone after scripts/setup.sh (it runs it too; quick when
# all is set up):
#
#   docs/screenshots.sh              # about 1.5 minutes once the images are built
#   docs/screenshots.sh --keep       # keep the work folder (server log, job store) to look into
#   docs/screenshots.sh --out DIR    # write the PNGs elsewhere
#
# Installs Debian's chromium when missing. Starts its own Prefect server on a free port with
# its own JOBCLOUD_HOME and job store in a temporary folder (your ~/.jobcloud and your local
# server are not touched), runs `jobcloud deploy`, a torchfit train job on the sample and a
# linefit train job that fails in its container, then drives headless Chromium over its
# DevTools port (docs/screenshots.py, standard library only). Everything it started is stopped
# when it ends, also on Ctrl-C. Exit 1 when a job or a page did not turn out as expected (the
# PNGs are written anyway; the warnings say which).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium ..." >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y chromium >&2 || { $SUDO apt-get update >&2 && $SUDO apt-get install -y chromium >&2; }
fi

eval "$(scripts/setup.sh)"          # .venv, the container engine (DOCKER_HOST), the images
export DOCKER_HOST

# The Python helper stops what it started itself; this trap only covers a kill of this shell
# before the helper could clean up.
pid=
cleanup() { if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
.venv/bin/python docs/screenshots.py "$@" &
pid=$!
set +e
wait "$pid"
rc=$?
set -e
pid=
exit "$rc"
