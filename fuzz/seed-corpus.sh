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

# The archive reader: NDJSON objects as the engine writes them (canonical Go JSON, sorted by
# line), with the odd cases readers must take: nil and empty data, a non-canonical record,
# a torn last record, lines out of order, a duplicate line. Mode byte 0x01: the target
# compresses the rest itself; 0x03: also claims an uncompressed size (4 bytes, little
# endian); 0x00: the rest is the object as stored (compressed here with zstd when present).
python3 - "$here/corpus/archive_read" <<'PY'
import base64, json, pathlib, shutil, struct, subprocess, sys
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
def record(line, data, id=0, step=5, time=1700000000, kind=0):
    data = "null" if data is None else '"' + base64.b64encode(data).decode() + '"'
    return f'{{"id":{id},"step_id":{step},"time":{time},"line":{line},"data":{data},"type":{kind}}}\n'
objects = {
    "sorted": "".join(record(n, f"line {n} \u00e9\t\"q\"".encode()) for n in range(5)),
    "nil-and-empty": record(0, None) + record(1, b"") + record(2, b"\xff\x00\n"),
    "non-canonical": record(0, b"a") + '{"line":1,"step_id":5,"data":"Yg==","extra":[1,{"x":2}]}\n',
    "torn": record(0, b"a") + record(1, b"b")[:20],
    "out-of-order": record(3, b"c") + record(1, b"a"),
    "duplicate": record(1, b"a") + record(1, b"b"),
    "big-numbers": record(9223372036854775807, b"x", id=-9223372036854775808, time=-1, kind=2**40),
    "not-json": "{\"line\":1,\n[]\n\"x\"\n\n",
}
for name, text in objects.items():
    body = text.encode()
    (out / f"seed-{name}").write_bytes(b"\x01" + body)
    (out / f"seed-claimed-{name}").write_bytes(b"\x03" + struct.pack("<I", len(body)) + body)
    if shutil.which("zstd"):
        frame = subprocess.run(["zstd", "-q", "-c", "--no-check"], input=body, capture_output=True, check=True).stdout
        (out / f"seed-object-{name}").write_bytes(b"\x00" + frame)
        checked = subprocess.run(["zstd", "-q", "-c"], input=body, capture_output=True, check=True).stdout
        (out / f"seed-object-checked-{name}").write_bytes(b"\x00" + checked)
print(f"{len(list(out.iterdir()))} seeds in {out}")
PY
