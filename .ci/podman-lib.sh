# Sourced by .ci/container-check and .ci/systemd-check: podman as it works on
# these machines (../shared/notes/containers-here.md): runc rather than
# crun, cgroupfs, no default ulimits, and base images made from Debian's
# packages with debootstrap (no registry is reachable), kept in podman's
# store between runs (building one takes minutes).

podman_setup() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman runc debootstrap uidmap fuse-overlayfs >/dev/null
  fi
  mkdir -p /etc/switchboard-ci
  CONTAINERS_CONF=/etc/switchboard-ci/containers.conf
  cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
CONF
  export CONTAINERS_CONF
}

pm() { podman --runtime runc "$@"; }

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# debootstrap_image NAME [--include=...] [--change ...]...: makes a minbase
# Debian bookworm root and imports it as NAME, unless NAME exists.
debootstrap_image() {
  local name=$1
  shift
  local include=() change=()
  while [ $# -gt 0 ]; do
    case $1 in
      --include=*) include=("$1") ;;
      --change) change+=(--change "$2"); shift ;;
    esac
    shift
  done
  if pm image exists "$name"; then
    echo "image $name: kept from an earlier run"
    return 0
  fi
  local rootfs
  rootfs=$(mktemp -d /var/tmp/switchboard-rootfs.XXXXXX)
  echo "image $name: debootstrap --variant=minbase ${include[*]} bookworm (a few minutes, once)"
  debootstrap --variant=minbase "${include[@]}" bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -20 "$rootfs.log"; rm -rf "$rootfs"; return 1; }
  if [ -n "${PREPARE_ROOTFS:-}" ]; then "$PREPARE_ROOTFS" "$rootfs"; fi
  tar -C "$rootfs" -c . | pm import "${change[@]}" - "$name" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  echo "image $name: built"
}
