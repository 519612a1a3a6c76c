// Command gobvectors writes golden vectors of net/rpc's gob wire format, produced by the
// real Go encoder, for the Rust gob codec's tests (crates/gob/tests/golden/vectors.json).
//
// Why a generator instead of hand-written hex: gob numbers user types process-wide, so the
// bytes depend on what the process encoded before. Each vector is therefore encoded in a
// fresh child process (this binary re-executed with -one NAME); vectors marked "fresh" are
// what a new Go process sends for its first user type (id 64), the others first register
// Pad throw-away types so that the ids move up, as they would in a Woodpecker server that
// had gob-encoded something else before loading the addon.
//
// Usage:
//
//	cd interop && go run ./cmd/gobvectors -out ../crates/gob/tests/golden/vectors.json
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
)

func main() {
	out := flag.String("out", "", "write all vectors to this JSON file")
	one := flag.String("one", "", "internal: encode the named vector in this process, print it")
	flag.Parse()
	var err error
	switch {
	case *one != "":
		err = printOne(*one)
	case *out != "":
		err = writeAll(*out)
	default:
		err = fmt.Errorf("give -out PATH")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobvectors:", err)
		os.Exit(1)
	}
}

// printOne encodes one vector in this (fresh) process and prints it as JSON.
func printOne(name string) error {
	s, ok := findSpec(name)
	if !ok {
		return fmt.Errorf("no vector named %q", name)
	}
	v, err := encodeVector(s)
	if err != nil {
		return fmt.Errorf("vector %s: %w", name, err)
	}
	return json.NewEncoder(os.Stdout).Encode(v)
}

// writeAll runs one child process per vector and writes them, in spec order, to path.
func writeAll(path string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	all := make([]vector, 0, len(specs()))
	for _, s := range specs() {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(self, "-one", s.name)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("vector %s: %w: %s", s.name, err, stderr.String())
		}
		var v vector
		if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
			return fmt.Errorf("vector %s: child output: %w", s.name, err)
		}
		all = append(all, v)
	}
	data, err := json.MarshalIndent(all, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(os.Stderr, "gobvectors: wrote %d vectors to %s\n", len(all), path)
	return nil
}
