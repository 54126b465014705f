#!/usr/bin/env bash
# Make sure a CRIU that works on this kernel is at hand for checkpoint/restore (as root).
#
# Usable means: `criu --version` says 4.1 or newer and `criu check` passes. Debian 12's
# criu 3.17 fails `criu check` on kernels with a split vDSO ("vdso: Failed to fill self
# vdso symtable"); 4.1 handles it. Order: $EXECDRIVER_CRIU, the one built here before
# ($EXECDRIVER_CRIU_DIR, default /usr/local/lib/execdriver-criu/criu), then criu on PATH.
# When none is usable, build Debian 13's criu source (only the criu binary; ~30 s on two
# cores) and install it into $EXECDRIVER_CRIU_DIR, so that later runs find it and do no work.
#
# The trixie deb-src entry lives only in a private apt directory under a temporary
# directory (its own sources list, lists and cache): /etc/apt is never touched, and the
# temporary directory is removed on any exit. Prints the usable binary's path last.
# Exit status: 0 with a usable CRIU, 1 when none could be found or built.
set -euo pipefail
MIN_MAJOR=4
MIN_MINOR=1
DEST_DIR=${EXECDRIVER_CRIU_DIR:-/usr/local/lib/execdriver-criu}
BUILD_DEPS="libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libnl-3-dev libcap-dev libnet1-dev libbsd-dev libgnutls28-dev uuid-dev pkg-config gcc make xz-utils"

log() { echo "build-criu: $*" >&2; }

# usable PATH: version >= MIN and `criu check` passes
usable() {
    local bin=$1 version major minor
    [ -x "$bin" ] || return 1
    version=$("$bin" --version 2>/dev/null | sed -n 's/^Version: *\([0-9.]*\).*/\1/p' | head -n1)
    [ -n "$version" ] || return 1
    major=${version%%.*}
    minor=${version#*.}
    minor=${minor%%.*}
    if [ "$major" -lt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
        log "$bin is CRIU $version (need >= $MIN_MAJOR.$MIN_MINOR)"
        return 1
    fi
    if ! "$bin" check >/dev/null 2>&1; then
        log "$bin is CRIU $version but its \`criu check\` fails on this kernel"
        return 1
    fi
    return 0
}

candidates=()
[ -n "${EXECDRIVER_CRIU:-}" ] && candidates+=("$EXECDRIVER_CRIU")
candidates+=("$DEST_DIR/criu")
on_path=$(command -v criu || true)
[ -n "$on_path" ] && candidates+=("$on_path")
for bin in "${candidates[@]}"; do
    if usable "$bin"; then
        echo "$bin"
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ]; then
    log "no usable CRIU found, and building one needs root"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
missing=""
for p in $BUILD_DEPS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    log "installing build dependencies:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
fi

work=$(mktemp -d /var/tmp/execdriver-criu-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"  # (apt downloads as the _apt user)
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/parts" "$work/src"
cat >"$work/apt/trixie-src.list" <<'EOF'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
EOF
apt_private=(
    -o "Dir::Etc::SourceList=$work/apt/trixie-src.list"
    -o "Dir::Etc::SourceParts=$work/apt/parts"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Cache=$work/apt/cache"
)
log "fetching Debian 13's criu source (a private apt directory: /etc/apt is not changed)"
apt-get "${apt_private[@]}" update -qq
# (the debian.tar.xz part has answered 404 on some days: only the orig tarball is needed)
(cd "$work/src" && apt-get "${apt_private[@]}" source --download-only criu >/dev/null 2>&1) || true
orig=$(find "$work/src" -maxdepth 1 -name 'criu_*.orig.tar.*' | head -n1)
if [ -z "$orig" ]; then
    log "apt-get source --download-only criu (trixie) fetched no criu_*.orig.tar.* tarball"
    exit 1
fi
log "building $(basename "$orig")"
tar -C "$work/src" -xf "$orig"
srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'criu*' | head -n1)
start=$(date +%s)
if ! make -C "$srcdir" -j"$(nproc)" criu >"$work/build.log" 2>&1; then
    tail -n 20 "$work/build.log" >&2
    log "make criu failed"
    exit 1
fi
log "built in $(( $(date +%s) - start )) s"
if ! usable "$srcdir/criu/criu"; then
    log "the freshly built CRIU is not usable either"
    exit 1
fi
mkdir -p "$DEST_DIR"
install -m 0755 "$srcdir/criu/criu" "$DEST_DIR/criu.new"
mv -f "$DEST_DIR/criu.new" "$DEST_DIR/criu"
"$DEST_DIR/criu" --version | sed -n 's/^Version: *//p' >"$DEST_DIR/VERSION"
log "installed $DEST_DIR/criu ($(cat "$DEST_DIR/VERSION"))"
echo "$DEST_DIR/criu"
