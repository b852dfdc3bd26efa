#!/usr/bin/env bash
# Install and start what the sandboxes need; idempotent, each step skipped
# when already done:
#   1. apt packages: bubblewrap, libseccomp2 (the local sandbox's seccomp filter), docker.io, debootstrap,
#      ripgrep, patch, git
#   2. a Docker engine: dockerd started in the background when none answers
#      (log: $LOOPCODER_DOCKERD_LOG), with fallback configurations
#      (--iptables=false --bridge=none, then vfs storage) when the default fails
#   3. the base image loopcoder/base:bookworm (debootstrap minbase + python3, pytest,
#      git, patch, imported with `docker import`), rebuilt when missing or older
# Needs root (or passwordless sudo). Exit status is non-zero when a step
# failed; scripts/test.sh then goes on and the tests that need it say why.
set -euo pipefail

IMAGE=${LOOPCODER_BASE_IMAGE:-loopcoder/base:bookworm}
SUITE=${LOOPCODER_BASE_SUITE:-bookworm}
DOCKERD_LOG=${LOOPCODER_DOCKERD_LOG:-/var/log/loopcoder-dockerd.log}
WAIT_S=${LOOPCODER_DOCKERD_WAIT:-60}

say() { echo "sandbox-deps: $*"; }
now() { date +%s; }
T0=$(now)

SUDO=()
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    say "not root and no passwordless sudo: run 'sudo bash scripts/sandbox-deps.sh' once"; exit 1
  fi
fi
as_root() { "${SUDO[@]}" "$@"; }

# --- 1. packages ---------------------------------------------------------------
missing=()
for pair in bwrap:bubblewrap dockerd:docker.io debootstrap:debootstrap rg:ripgrep patch:patch git:git; do
  PATH=$PATH:/usr/sbin:/sbin command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
PATH=$PATH:/usr/sbin:/sbin ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "packages present (bubblewrap, libseccomp2, docker.io, debootstrap, ripgrep, patch, git)"
fi
export PATH=$PATH:/usr/sbin:/sbin

# --- 2. docker engine ----------------------------------------------------------
engine_up() { timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {  # $@: extra dockerd flags; true once `docker info` answers
  say "starting dockerd $* (log: $DOCKERD_LOG)"
  as_root mkdir -p "$(dirname "$DOCKERD_LOG")"
  as_root bash -c "setsid dockerd $* >>'$DOCKERD_LOG' 2>&1 </dev/null &"
  local deadline=$(( $(now) + WAIT_S ))
  while [ "$(now)" -lt "$deadline" ]; do
    engine_up && return 0
    pgrep -x dockerd >/dev/null || return 1  # it gave up: no point waiting
    sleep 1
  done
  return 1
}

stop_dockerd() {
  local pid
  pid=$(pgrep -x dockerd || true)
  [ -n "$pid" ] || return 0
  as_root kill "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
}

# Fallbacks for machines without iptables/NAT, then without overlayfs: no
# bridge network (our containers run without network anyway), vfs storage.
CONFIGS=("" "--iptables=false --ip6tables=false --bridge=none"
         "--iptables=false --ip6tables=false --bridge=none --storage-driver=vfs")
if engine_up; then
  say "a Docker engine answers"
elif pgrep -x dockerd >/dev/null && { sleep 5; engine_up; }; then
  say "dockerd was starting; it answers now"
else
  for flags in "${CONFIGS[@]}"; do
    start_dockerd $flags && break
    say "dockerd did not come up with '${flags:-default flags}'; last log lines:"
    tail -n 5 "$DOCKERD_LOG" | sed 's/^/    /' || true
    stop_dockerd
  done
  engine_up || { say "dockerd does not start here; see $DOCKERD_LOG"; exit 1; }
  say "dockerd is up ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
fi

# --- 3. base image -------------------------------------------------------------
# Bump BASE_VERSION when the image's contents change: an older build is replaced.
BASE_VERSION=2
if [ "$(docker image inspect -f '{{index .Config.Labels "loopcoder.base"}}' "$IMAGE" 2>/dev/null)" = "$BASE_VERSION" ]; then
  say "image $IMAGE present"
else
  # The mirror apt already uses for this suite (debootstrap's own default otherwise).
  mirror=$(grep -hs -A3 '^URIs:' /etc/apt/sources.list.d/*.sources | awk -v s="$SUITE" '
    /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) {print u; exit}}')
  [ -n "$mirror" ] || mirror=$(awk -v s="$SUITE" '$1=="deb" && $3==s {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  root=$(mktemp -d /var/tmp/loopcoder-rootfs.XXXXXX)
  trap 'as_root rm -rf "$root"' EXIT
  say "building $IMAGE: debootstrap --variant=minbase $SUITE ${mirror:-(default mirror)} (a minute or two)"
  t=$(now)
  as_root debootstrap --variant=minbase --include=python3,python3-pytest,git,patch,ca-certificates \
    "$SUITE" "$root" ${mirror:+"$mirror"} >"$root.log" 2>&1 || {
      say "debootstrap failed; last lines of $root.log:"; tail -n 10 "$root.log" | sed 's/^/    /'; exit 1; }
  as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root.log"
  say "debootstrap took $(( $(now) - t ))s; importing"
  as_root tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' --change "LABEL loopcoder.base=$BASE_VERSION" - "$IMAGE" >/dev/null
  say "image $IMAGE built ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
fi
say "done in $(( $(now) - T0 ))s"
