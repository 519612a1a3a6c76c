package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestVectors builds the generator, runs it twice and checks the output against facts
// known independently of this code: the hex dumps of the protocol reference (§6.11),
// the id numbering, and the message-length boundary.
func TestVectors(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "gobvectors")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(name string) []byte {
		path := filepath.Join(dir, name)
		if out, err := exec.Command(bin, "-out", path).CombinedOutput(); err != nil {
			t.Fatalf("run: %v\n%s", err, out)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	first, second := run("a.json"), run("b.json")
	if string(first) != string(second) {
		t.Fatal("two runs wrote different files")
	}

	byName := map[string][]byte{}
	fresh := map[string]bool{}
	var vectors []vector
	if err := json.Unmarshal(first, &vectors); err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors {
		b, err := hex.DecodeString(v.Hex)
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		byName[v.Name] = b
		fresh[v.Name] = v.Fresh
	}
	if len(vectors) != len(specs()) {
		t.Fatalf("%d vectors, %d specs", len(vectors), len(specs()))
	}

	// §6.11 (a): the whole first Dispense request of a fresh process.
	wantA := "2e7f030101075265717565737401ff80000102010d536572766963654d6574686f64010c00010353657101060000" +
		"0017ff80011244697370656e7365722e44697370656e736500" + "060c00036c6f67"
	if got := hex.EncodeToString(byName["host_control_dispense"]); got != wantA {
		t.Errorf("host_control_dispense:\n got %s\nwant %s", got, wantA)
	}
	// §6.11 (b): the Response definition, header and uint32(1) body.
	wantB := "397f03010108526573706f6e736501ff80000103010d536572766963654d6574686f64010c0001035365710106" +
		"0001054572726f72010c0000" + "0017ff80011244697370656e7365722e44697370656e736500" + "03060001"
	if got := hex.EncodeToString(byName["plugin_control_dispense_reply"]); len(got) < len(wantB) || got[:len(wantB)] != wantB {
		t.Errorf("plugin_control_dispense_reply does not start with §6.11 (b):\n got %s\nwant %s…", got, wantB)
	}

	msgs, err := messages(byName["host_header_length_127_then_128"])
	if err != nil {
		t.Fatal(err)
	}
	// definition, header, body, header, body
	if len(msgs) != 5 || len(msgs[1]) != 127 || len(msgs[3]) != 128 {
		lens := []int{}
		for _, m := range msgs {
			lens = append(lens, len(m))
		}
		t.Errorf("boundary vector message lengths %v, want [_ 127 _ 128 _]", lens)
	}

	for name, wantFresh := range map[string]bool{
		"host_control_dispense": true, "host_broker_calls_id65": false,
		"host_dispense_id134_two_byte_growth": false,
	} {
		if fresh[name] != wantFresh {
			t.Errorf("%s: fresh = %v, want %v", name, fresh[name], wantFresh)
		}
	}
	// Id 134 is defined as int(-134) = uint 267 = fe 01 0b: two bytes more than 7f.
	if got := hex.EncodeToString(byName["host_dispense_id134_two_byte_growth"][:4]); got != "31fe010b" {
		t.Errorf("id 134 definition starts %s, want 31fe010b", got)
	}
}
