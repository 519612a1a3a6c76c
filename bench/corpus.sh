#!/usr/bin/env bash
# Builds the benchmark's log corpus from the output of real tools run on this machine, the
# kind of text Woodpecker steps print: a Rust build (`cargo build -vv`), a Go build
# (`go build -x`), Go's standard library tests (`go test -v`), `pip install -v` into a venv,
# `npm install`, `pytest -v` and `make` of a small C project (with make's own trace). Never random text: compression ratios, JSON
# escaping and line lengths are only meaningful on real output.
#
#   bench/corpus.sh [DIR]     (default: bench/corpus, gitignored)
#
# One file per tool, <tool>.log, stdout and stderr interleaved as an agent sees them. A file
# that already exists is kept (the corpus is a cache: delete DIR to rebuild it). Needs only
# the package registries (crates.io, the Go module proxy is not used, PyPI, npm); every
# build happens in a private temporary directory that is removed afterwards.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/corpus}"
mkdir -p "$out"
work="$(mktemp -d "${TMPDIR:-/tmp}/bench-corpus.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log() { echo "corpus: $*" >&2; }

# run NAME CMD...: runs CMD in $work/NAME with output captured to $out/NAME.log; a failing
# tool is an error (its log would not be the log of a real successful step).
run() {
    local name="$1"
    shift
    if [ -s "$out/$name.log" ]; then
        log "$name.log cached"
        return
    fi
    log "generating $name.log"
    mkdir -p "$work/$name"
    if ! (cd "$work/$name" && "$@") >"$out/$name.log.tmp" 2>&1; then
        log "$name failed; its output:"
        tail -n 20 "$out/$name.log.tmp" >&2
        rm -f "$out/$name.log.tmp"
        exit 1
    fi
    mv "$out/$name.log.tmp" "$out/$name.log"
}

cargo_build() {
    cargo init --quiet --name corpus_crate .
    cat >>Cargo.toml <<'EOF'
serde = { version = "1", features = ["derive"] }
serde_json = "1"
regex = "1"
tokio = { version = "1", features = ["full"] }
libc = "0.2"
anyhow = "1"
log = "0.4"
EOF
    CARGO_TARGET_DIR="$PWD/target" cargo build -vv --color never
}

go_build() {
    cat >main.go <<'EOF'
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

func main() {
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"status": http.StatusText(200)})
	fmt.Println("ok")
}
EOF
    cat >go.mod <<'EOF'
module corpus

go 1.21
EOF
    # A private build cache and -a make go rebuild every standard library package it needs,
    # so the -x trace shows every compile and link command, as in a CI step without a cache.
    GOCACHE="$PWD/gocache" GOFLAGS=-mod=mod go build -a -x -o corpus .
}

pip_install() {
    python3 -m venv venv
    # Source distributions are built locally, so pip -v prints the build backend's output too.
    venv/bin/pip install -v --no-cache-dir --disable-pip-version-check \
        --no-binary six,idna,pyyaml,certifi six idna certifi pyyaml requests
}

npm_install() {
    npm init -y >/dev/null
    npm install --loglevel silly --no-audit --no-fund --cache "$PWD/npm-cache" express eslint
}

go_test() {
    # The standard library's own tests: real `go test -v` output, offline.
    GOCACHE="$PWD/gocache" go test -v -count=1 strings bytes strconv sort unicode/utf8 \
        encoding/json encoding/base64 encoding/csv regexp path container/list text/template \
        fmt math/big net/url go/scanner go/parser go/printer go/types compress/gzip archive/zip \
        bufio mime
}

pytest_run() {
    cat >test_corpus.py <<'EOF'
import json
import pytest


@pytest.mark.parametrize("n", range(3000))
def test_json_round_trip(n):
    doc = {"n": n, "items": list(range(n % 17)), "name": f"item-{n}"}
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize("a,b", [(a, b) for a in range(60) for b in range(40)])
def test_arithmetic(a, b):
    assert (a + b) - b == a


def test_expected_failure_is_reported():
    with pytest.raises(ZeroDivisionError):
        1 / 0
EOF
    python3 -m pytest -v -p no:cacheprovider test_corpus.py
}

make_c() {
    mkdir -p src
    for i in $(seq 1 100); do
        cat >"src/unit$i.c" <<EOF
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
int unit$i(const char *s) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s-%d", s, $i);
    return (int)strlen(buf) + atoi("$i");
}
EOF
    done
    {
        echo '#include <stdio.h>'
        for i in $(seq 1 100); do echo "int unit$i(const char *s);"; done
        echo 'int main(void) { int t = 0;'
        for i in $(seq 1 100); do echo "  t += unit$i(\"x\");"; done
        echo '  printf("%d\n", t); return 0; }'
    } >src/main.c
    cat >Makefile <<'EOF'
CFLAGS = -O2 -Wall -Wextra -v
SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:.c=.o)
app: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS)
%.o: %.c
	$(CC) $(CFLAGS) -c -o $@ $<
EOF
    # --debug=basic,implicit: make explains every rule it considers, as `make -d` in CI does.
    make --debug=basic,implicit -j1 app
    ./app
}

run cargo-build cargo_build
run go-build go_build
run go-test go_test
run pip-install pip_install
run npm-install npm_install
run pytest pytest_run
run make-c make_c

total=$(cat "$out"/*.log | wc -c)
lines=$(cat "$out"/*.log | wc -l)
log "corpus in $out: $lines lines, $total bytes"
