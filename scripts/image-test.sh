#!/usr/bin/env bash
# Image-shaped test: the static addon in a root laid out like Woodpecker's official server image
# (`FROM scratch`: no libc, no shell, no /tmp; /etc/passwd + group with woodpecker = uid 1000,
# the CA bundle, /var/lib/woodpecker owned by 1000 and the only writable place; the image's
# environment only), plus what every container runtime provides (/dev/null, /dev/urandom,
# /proc). A static Go host (interop/cmd/wphost) loads the addon from /opt/addons with
# Woodpecker's loader as uid 1000 through chroot, streams steps, waits for the archive and
# reads them back exactly, also after restarting the addon:
#   embedded default (local directory on the volume), then SeaweedFS on 127.0.0.1 by IP, by a
#   name from the root's /etc/hosts and by a name from a DNS server (dnsmasq on 127.0.0.1:53);
#   then the same in a root with no passwd entry for the uid.
#
# Usage (as root; skipped otherwise):
#   eval "$(scripts/s3/start.sh)"; bash scripts/image-test.sh; scripts/s3/stop.sh
# Without ARCHIVE_TEST_SEAWEEDFS_ENDPOINT the S3 cases are skipped (with a message). The
# static binary comes from $WOODPECKER_S3_LOGS_STATIC_BIN, else scripts/build-static.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "image-test: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "SKIPPED: needs root (chroot, mounts, device nodes); CI runs as root"
    exit 0
fi
# A private mount namespace: every mount below disappears with this process, whatever happens.
if [ -z "${IMAGE_TEST_IN_NAMESPACE:-}" ] && unshare --mount --propagation private true 2>/dev/null; then
    IMAGE_TEST_IN_NAMESPACE=1 exec unshare --mount --propagation private bash "$0" "$@"
fi

addon="${WOODPECKER_S3_LOGS_STATIC_BIN:-}"
[ -n "$addon" ] || addon="$(bash scripts/build-static.sh | tail -n 1)"
file -b "$addon" | grep -Eq 'static-pie linked|statically linked' || {
    say "FAIL: $addon is not statically linked: $(file -b "$addon")"
    exit 1
}

work="$(mktemp -d "${TMPDIR:-/tmp}/image-test.XXXXXX")"
dnsmasq_pid=""
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[i]}" 2>/dev/null || true
    done
    [ -z "$dnsmasq_pid" ] || kill "$dnsmasq_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

say "building the Go host statically (CGO_ENABLED=0)"
(cd interop && CGO_ENABLED=0 go build -trimpath -o "$work/wphost" ./cmd/wphost)

s3_host_name="s3.hosts.image-test"
s3_dns_name="s3.dns.image-test"

# Lays out a scratch-image root in $1; with $2 = yes, /etc/passwd has the woodpecker user.
make_root() {
    local root="$1" with_user="$2"
    mkdir -p "$root"/{bin,dev,proc,etc/ssl/certs,opt/addons,var/lib/woodpecker}
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    echo "root:x:0:0:root:/root:/sbin/nologin" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
    if [ "$with_user" = yes ]; then
        # What `useradd -u 1000 -g 1000 woodpecker` in the image's build stage writes.
        echo "woodpecker:x:1000:1000::/home/woodpecker:/bin/sh" >>"$root/etc/passwd"
        echo "woodpecker:x:1000:" >>"$root/etc/group"
    fi
    # Docker writes these two into every container.
    printf '127.0.0.1\tlocalhost\n127.0.0.1\t%s\n' "$s3_host_name" >"$root/etc/hosts"
    echo "nameserver 127.0.0.1" >"$root/etc/resolv.conf"
    install -m 0755 "$addon" "$root/opt/addons/woodpecker-s3-logs"
    install -m 0755 "$work/wphost" "$root/bin/wphost"
    chown -R root:root "$root"
    chmod -R go-w "$root"
    # Writing to a device node is allowed on a read-only mount.
    mknod -m 0666 "$root/dev/null" c 1 3
    mknod -m 0666 "$root/dev/urandom" c 1 9
}

# Runs wphost in $1 as uid 1000 with a fresh volume; $2 = HOME the runtime sets; the rest are
# extra environment entries (the addon's settings, as on the server).
run_case() {
    local root="$1" home="$2" name="$3"
    shift 3
    local volume="$work/volume-$RANDOM$RANDOM"
    mkdir -p "$volume"
    chown 1000:1000 "$volume"
    chmod 0755 "$volume"
    # The root read-only, the volume writable on top of it, /proc inside.
    mount --bind "$root" "$root" && mounted+=("$root")
    mount --bind "$volume" "$root/var/lib/woodpecker" && mounted+=("$root/var/lib/woodpecker")
    mount -t proc proc "$root/proc" && mounted+=("$root/proc")
    mount -o remount,bind,ro "$root"
    # Exactly the image's environment (Docker adds PATH, HOME and HOSTNAME), plus the settings.
    local log="$work/${name//\//-}.log" status=0
    env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$home" HOSTNAME=woodpecker-server \
        GODEBUG=netdns=go WOODPECKER_IN_CONTAINER=true \
        XDG_CACHE_HOME=/var/lib/woodpecker XDG_DATA_HOME=/var/lib/woodpecker \
        WOODPECKER_LOG_STORE=addon WOODPECKER_LOG_STORE_FILE_PATH=/opt/addons/woodpecker-s3-logs \
        WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=200ms \
        "$@" \
        chroot --userspec=1000:1000 --groups=1000 "$root" /bin/wphost >"$log" 2>&1 || status=$?
    umount "$root/proc" "$root/var/lib/woodpecker" "$root"
    mounted=("${mounted[@]:0:${#mounted[@]}-3}")
    local result
    result="$(grep '^wphost: ' "$log" || true)"
    if [ "$status" -ne 0 ] || [ -z "$result" ]; then
        say "FAIL: $name (exit $status); host and addon output:"
        sed 's/^/    /' "$log"
        exit 1
    fi
    # Nothing may be left behind but the spool and (for the embedded default) the archive.
    local leftovers
    leftovers="$(cd "$volume" && find . -mindepth 1 -maxdepth 1 ! -name s3-logs-spool ! -name woodpecker-s3-logs-archive | tr '\n' ' ')"
    if [ -n "$leftovers" ]; then
        say "FAIL: $name left $leftovers on the volume"
        exit 1
    fi
    if [ -n "${expect_archive_dir:-}" ] && [ ! -d "$volume/woodpecker-s3-logs-archive" ]; then
        say "FAIL: $name: no archive directory on the volume"
        exit 1
    fi
    if [ -z "${expect_archive_dir:-}" ] && [ -e "$volume/woodpecker-s3-logs-archive" ]; then
        say "FAIL: $name: archived to the volume instead of S3"
        exit 1
    fi
    if ! grep -q 'using /var/lib/woodpecker (XDG_CACHE_HOME)' "$log"; then
        say "FAIL: $name: the socket did not fall back to XDG_CACHE_HOME as expected; output:"
        sed 's/^/    /' "$log"
        exit 1
    fi
    say "ok: $name: ${result#wphost: }"
}

s3_env() { # $1 = endpoint URL
    echo WOODPECKER_LOG_STORE_S3_BUCKET="$ARCHIVE_TEST_SEAWEEDFS_BUCKET"
    echo WOODPECKER_LOG_STORE_S3_ENDPOINT="$1"
    echo WOODPECKER_LOG_STORE_S3_PATH_STYLE=true
    echo AWS_ACCESS_KEY_ID="$ARCHIVE_TEST_SEAWEEDFS_ACCESS_KEY"
    echo AWS_SECRET_ACCESS_KEY="$ARCHIVE_TEST_SEAWEEDFS_SECRET_KEY"
}

dns_ok=""
if [ -n "${ARCHIVE_TEST_SEAWEEDFS_ENDPOINT:-}" ]; then
    seaweed_port="${ARCHIVE_TEST_SEAWEEDFS_ENDPOINT##*:}"
    if ! command -v dnsmasq >/dev/null; then
        say "installing dnsmasq-base (Debian) for the DNS case"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null || true
    fi
    if command -v dnsmasq >/dev/null; then
        # Answers only for the test name, from 127.0.0.1:53 (the only port musl's resolver
        # asks): A 127.0.0.1, and AAAA with no data (not REFUSED, which musl takes as a failure).
        dnsmasq --keep-in-foreground --port=53 --listen-address=127.0.0.1 --bind-interfaces \
            --no-resolv --no-hosts --pid-file="$work/dnsmasq.pid" --log-queries \
            --host-record="$s3_dns_name,127.0.0.1" --local=/image-test/ \
            --log-facility="$work/dnsmasq.log" &
        dnsmasq_pid=$!
        sleep 0.5
        kill -0 "$dnsmasq_pid" 2>/dev/null && dns_ok=yes
        [ -n "$dns_ok" ] || say "note: dnsmasq could not listen on 127.0.0.1:53 (taken?); skipping the DNS case"
    else
        say "note: dnsmasq not available; skipping the DNS case"
    fi
fi

for variant in with-user no-user; do
    root="$work/root-$variant"
    if [ "$variant" = with-user ]; then
        make_root "$root" yes
        home=/home/woodpecker
    else
        make_root "$root" no
        home=/ # what Docker sets when the uid has no passwd entry
    fi
    say "root $variant: $(cd "$root" && find . -mindepth 1 -maxdepth 3 | sort | tr '\n' ' ')"
    expect_archive_dir=yes run_case "$root" "$home" "$variant/embedded-default"
    if [ -z "${ARCHIVE_TEST_SEAWEEDFS_ENDPOINT:-}" ]; then
        say "note: ARCHIVE_TEST_SEAWEEDFS_ENDPOINT unset (run scripts/s3/start.sh); skipping the S3 cases"
        continue
    fi
    mapfile -t env_ip < <(s3_env "$ARCHIVE_TEST_SEAWEEDFS_ENDPOINT")
    run_case "$root" "$home" "$variant/seaweedfs-by-ip" "${env_ip[@]}"
    mapfile -t env_hosts < <(s3_env "http://$s3_host_name:$seaweed_port")
    run_case "$root" "$home" "$variant/seaweedfs-by-etc-hosts-name" "${env_hosts[@]}"
    if [ -n "$dns_ok" ]; then
        mapfile -t env_dns < <(s3_env "http://$s3_dns_name:$seaweed_port")
        run_case "$root" "$home" "$variant/seaweedfs-by-dns-name" "${env_dns[@]}"
        grep -q "query\[A\] $s3_dns_name from 127.0.0.1" "$work/dnsmasq.log" || {
            say "FAIL: the addon did not ask the DNS server for $s3_dns_name"
            exit 1
        }
    fi
done
say "all cases passed"
