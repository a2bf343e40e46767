#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests drive (skopeo, containerd, distribution's
# docker-registry, nginx, apache2-utils, prometheus for promtool, chromium for the web page test,
# postgresql for the server's PostgreSQL state, redis-server for a region of cache nodes, podman as a mirror client, strace for the adversarial fuzzer). Skips apt when every command is already there. Needs root.
set -euo pipefail

need=(skopeo containerd ctr docker-registry nginx htpasswd promtool chromium podman strace redis-server)
missing=()
for cmd in "${need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
# PostgreSQL's server programs are not on PATH: Debian keeps them in /usr/lib/postgresql/<major>/bin.
have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
have_postgres || missing+=(postgresql)

if ((${#missing[@]})); then
  echo "ci: installing test peers (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  # The docker-registry, containerd and nginx packages start their services from postinst. Without
  # systemd that goes through invoke-rc.d, which asks policy-rc.d: 101 = "do not start", so the
  # install neither fails nor leaves daemons running (nginx would take port 80, the registry 5000).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  remove_policy() { if ((created_policy)); then rm -f "$policy"; fi; }
  trap remove_policy EXIT
  apt-get update
  apt-get install -y --no-install-recommends skopeo containerd docker-registry nginx-light apache2-utils prometheus chromium chromium-driver postgresql podman strace redis-server
  remove_policy
  trap - EXIT
  for cmd in "${need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "ci: $cmd is still missing after apt-get install" >&2; exit 1; }
  done
  have_postgres || { echo "ci: PostgreSQL's initdb is still missing after apt-get install" >&2; exit 1; }
fi
