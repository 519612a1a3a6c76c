#!/usr/bin/env bash
# Validates the deployment files under contrib/ as far as this machine allows:
#   - every YAML and JSON file parses (python3, PyYAML);
#   - the IAM policy and the lifecycle rules have the shape AWS takes;
#   - the Dockerfile has no RUN (the official server image has no shell) and COPYs the binary
#     to /opt/addons/woodpecker-s3-logs;
#   - the systemd drop-in is a [Service] section of Key=Value lines, and `systemd-analyze
#     verify` loads it without a complaint when systemd-analyze is installed;
#   - `docker compose config` (or docker-compose v1) checks the compose file when either is
#     installed; `helm template` runs when helm is installed (it is not in Debian's archive).
# Usage: bash scripts/contrib-check.sh   (from anywhere; exits non-zero on the first failure)
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml \
    || python3 -m pip install --quiet --break-system-packages pyyaml   # PEP 668 (Debian's python3)

python3 - <<'PY'
import configparser, json, pathlib, re, sys
import yaml

root = pathlib.Path("contrib")
def fail(msg):
    sys.exit(f"contrib-check: {msg}")

files = sorted(p for p in root.rglob("*") if p.is_file())
for p in files:
    try:
        if p.suffix in (".yml", ".yaml"):
            docs = list(yaml.safe_load_all(p.read_text()))
            if not docs or not isinstance(docs[0], dict):
                fail(f"{p}: not a YAML mapping")
        elif p.suffix == ".json":
            json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        fail(f"{p}: does not parse: {e}")
    if p.suffix in (".yml", ".yaml", ".json"):
        print(f"ok   parses: {p}")

# IAM policy: Version 2012-10-17, Statements with Effect/Action/Resource, only the actions
# the addon uses.
pol = json.loads((root / "aws/iam-policy.json").read_text())
if pol.get("Version") != "2012-10-17" or not isinstance(pol.get("Statement"), list):
    fail("aws/iam-policy.json: needs Version 2012-10-17 and a Statement list")
allowed = {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
           "s3:ListBucket"}
actions = set()
for st in pol["Statement"]:
    for k in ("Effect", "Action", "Resource"):
        if k not in st:
            fail(f"aws/iam-policy.json: a statement lacks {k}")
    a = st["Action"]
    actions |= set([a] if isinstance(a, str) else a)
if actions != allowed:
    fail(f"aws/iam-policy.json: actions {sorted(actions)} != {sorted(allowed)}")
print("ok   IAM policy: Version, Statement, exactly the actions the addon uses")

# Lifecycle: Rules, each with ID/Filter/Status; an Expiration and an
# AbortIncompleteMultipartUpload of 1 day among them.
lc = json.loads((root / "aws/lifecycle.json").read_text())
rules = lc.get("Rules")
if not isinstance(rules, list) or not rules:
    fail("aws/lifecycle.json: needs a non-empty Rules list")
for r in rules:
    for k in ("ID", "Filter", "Status"):
        if k not in r:
            fail(f"aws/lifecycle.json: a rule lacks {k}")
    if r["Status"] not in ("Enabled", "Disabled"):
        fail("aws/lifecycle.json: Status must be Enabled or Disabled")
if not any(isinstance(r.get("Expiration", {}).get("Days"), int) for r in rules):
    fail("aws/lifecycle.json: no rule with Expiration.Days")
if not any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1
           for r in rules):
    fail("aws/lifecycle.json: no rule with AbortIncompleteMultipartUpload after 1 day")
print("ok   lifecycle: Rules with Expiration and AbortIncompleteMultipartUpload")

# Dockerfile: no RUN (scratch base, no shell), FROM the v3 server, COPY to /opt/addons.
df = (root / "docker/Dockerfile").read_text()
instr = [l.split(None, 1) for l in df.splitlines() if l.strip() and not l.lstrip().startswith("#")]
ops = [i[0].upper() for i in instr if i and re.fullmatch(r"[A-Za-z]+", i[0])]
if "RUN" in ops:
    fail("docker/Dockerfile: RUN step, but the base image has no shell")
if not re.search(r"^FROM\s+woodpeckerci/woodpecker-server:v3\s*$", df, re.M):
    fail("docker/Dockerfile: must be FROM woodpeckerci/woodpecker-server:v3")
if not re.search(r"^COPY\s.*\s/opt/addons/woodpecker-s3-logs\s*$", df, re.M):
    fail("docker/Dockerfile: no COPY to /opt/addons/woodpecker-s3-logs")
for k in ("WOODPECKER_LOG_STORE=addon",
          "WOODPECKER_LOG_STORE_FILE_PATH=/opt/addons/woodpecker-s3-logs"):
    if k not in df:
        fail(f"docker/Dockerfile: does not set {k}")
print("ok   Dockerfile: FROM server v3, no RUN, COPY to /opt/addons, env set")

# systemd drop-in: only a [Service] section; Key=Value lines.
dropin = root / "systemd/woodpecker-server.service.d/s3-logs.conf"
cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
cp.optionxform = str
try:
    cp.read_string(dropin.read_text())
except configparser.Error as e:
    fail(f"{dropin}: not INI: {e}")
if cp.sections() != ["Service"]:
    fail(f"{dropin}: sections {cp.sections()}, expected only [Service]")
if "Environment" not in cp["Service"]:
    fail(f"{dropin}: no Environment=")
print("ok   systemd drop-in: [Service] with Environment=")
PY

# systemd's own parser, when present: a stub unit with the drop-in beside it.
if command -v systemd-analyze >/dev/null; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/woodpecker-server.service.d"
    cp contrib/systemd/woodpecker-server.service.d/s3-logs.conf "$tmp/woodpecker-server.service.d/"
    printf '[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n' >"$tmp/woodpecker-server.service"
    out="$(SYSTEMD_UNIT_PATH="$tmp:" systemd-analyze verify --man=no "$tmp/woodpecker-server.service" 2>&1)" || {
        echo "$out"; echo "contrib-check: systemd-analyze verify failed"; exit 1; }
    if grep -q "s3-logs.conf" <<<"$out"; then
        echo "$out"; echo "contrib-check: systemd-analyze complains about the drop-in"; exit 1
    fi
    echo "ok   systemd-analyze verify: drop-in loads without warnings"
else
    echo "skip systemd-analyze not installed"
fi

compose=contrib/docker/docker-compose.yml
if docker compose version >/dev/null 2>&1; then
    docker compose -f "$compose" config -q || { echo "contrib-check: docker compose config failed"; exit 1; }
    echo "ok   docker compose config"
elif command -v docker-compose >/dev/null; then
    docker-compose -f "$compose" config -q || { echo "contrib-check: docker-compose config failed"; exit 1; }
    echo "ok   docker-compose config ($(docker-compose version --short))"
else
    echo "skip docker compose not installed (apt-get install docker-compose gives v1, which checks it)"
fi

if command -v helm >/dev/null; then
    helm repo add woodpecker https://woodpecker-ci.org/ >/dev/null
    helm template woodpecker woodpecker/woodpecker -f contrib/helm/values.yaml >/dev/null \
        || { echo "contrib-check: helm template failed"; exit 1; }
    echo "ok   helm template"
else
    echo "skip helm not installed (not in Debian's archive); values keys checked by hand"
fi
echo "contrib-check: all passed"
