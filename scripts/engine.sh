#!/usr/bin/env bash
# Make sure a container engine answers the Docker API; print the DOCKER_HOST to use.
# Uses DOCKER_HOST or Docker's socket when they answer; otherwise installs (Debian) and starts
# Podman's Docker-compatible API service on /run/podman/podman.sock.
set -euo pipefail

answers() { curl -fsS --max-time 3 --unix-socket "${1#unix://}" http://d/_ping >/dev/null 2>&1; }

if [ -n "${DOCKER_HOST:-}" ]; then
  case "$DOCKER_HOST" in
    unix://*) answers "$DOCKER_HOST" && { echo "$DOCKER_HOST"; exit 0; } ;;
    *) echo "$DOCKER_HOST"; exit 0 ;;
  esac
fi
if [ -S /var/run/docker.sock ] && answers unix:///var/run/docker.sock; then
  echo unix:///var/run/docker.sock; exit 0
fi
SOCK=/run/podman/podman.sock
if [ -S "$SOCK" ] && answers "unix://$SOCK"; then echo "unix://$SOCK"; exit 0; fi

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  echo "installing podman (no container engine answers)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq podman runc busybox-static curl >&2
fi
# On these hosts the default ulimits cannot be set and crun lacks hybrid cgroups: use runc.
if [ ! -f /etc/containers/containers.conf ] || ! grep -q 'runtime = "runc"' /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
fi
mkdir -p "$(dirname "$SOCK")"
rm -f "$SOCK"
nohup podman system service --time=0 "unix://$SOCK" >/tmp/jobcloud-podman.log 2>&1 &
for _ in $(seq 1 50); do
  answers "unix://$SOCK" && { echo "unix://$SOCK"; exit 0; }
  sleep 0.2
done
echo "podman's API service did not start; see /tmp/jobcloud-podman.log" >&2
exit 1
