#!/usr/bin/env bash
# Writes the seed corpora: the gob streams of real Go processes kept for the gob tests
# (crates/gob/tests/golden/vectors.json from interop/cmd/gobvectors, and go_streams.txt), one
# file per stream. libFuzzer starts from these instead of from nothing, so it reaches the
# type-definition and split-interface paths at once.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
golden="$here/../crates/gob/tests/golden"
out="$here/corpus/gob_decode"
mkdir -p "$out"
python3 - "$golden" "$out" <<'PY'
import json, pathlib, sys
golden, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
streams = {v["name"]: v["hex"] for v in json.loads((golden / "vectors.json").read_text())}
for line in (golden / "go_streams.txt").read_text().splitlines():
    if line.strip():
        name, hexdata = line.split()
        streams["go_" + name] = hexdata
for name, hexdata in streams.items():
    (out / f"seed-{name}").write_bytes(bytes.fromhex(hexdata))
print(f"{len(streams)} seeds in {out}")
# The host-to-plugin request streams also seed the net/rpc server loop.
rpc = out.parent / "netrpc_serve"
rpc.mkdir(parents=True, exist_ok=True)
for name, hexdata in streams.items():
    (rpc / f"seed-{name}").write_bytes(bytes.fromhex(hexdata))
# The decoder target reads a mode byte first (chunk size, limit): each stream once in 64-byte
# pieces with the generous limit, once in 7-byte pieces with the tiny one.
dec = out.parent / "netrpc_decode"
dec.mkdir(parents=True, exist_ok=True)
for name, hexdata in streams.items():
    (dec / f"seed-{name}").write_bytes(b"\x3f" + bytes.fromhex(hexdata))
    (dec / f"seed-small-{name}").write_bytes(b"\x86" + bytes.fromhex(hexdata))
PY
