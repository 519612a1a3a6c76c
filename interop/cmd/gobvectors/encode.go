package main

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"fmt"
	"io"
	"reflect"
)

// frame is one net/rpc message: a header (rpc.Request or rpc.Response) and its body.
type frame struct {
	header any
	body   any
}

// spec describes one vector: the frames one stream direction carries, in order, and how
// many throw-away types the process registers before encoding them.
type spec struct {
	name   string
	pad    int
	frames []frame
}

// vector is one entry of vectors.json; the layout is the contract with the Rust tests.
type vector struct {
	Name string `json:"name"`
	// Fresh is true when the stream's type ids start at 64, as in a new Go process.
	Fresh bool `json:"fresh"`
	// Hex is every byte the encoder wrote, length prefixes and type definitions included.
	Hex string `json:"hex"`
	// Types lists, per struct name as gob sends it, the fields with their type names.
	Types map[string][][2]string `json:"types"`
	// Values are the top-level values in order: header, body, header, body, ...
	Values []value `json:"values"`
}

// value is {"kind": payload} with exactly one key, see describe.
type value map[string]any

// encodeVector encodes s exactly as net/rpc's gob codecs do (one gob.Encoder over a
// bufio.Writer per stream direction, header then body, one Flush per message pair) and
// checks the result by decoding it back with gob.Decoder.
func encodeVector(s spec) (vector, error) {
	if err := registerPadding(s.pad); err != nil {
		return vector{}, err
	}
	var out bytes.Buffer
	buf := bufio.NewWriter(&out)
	enc := gob.NewEncoder(buf)
	v := vector{Name: s.name, Types: map[string][][2]string{}}
	for i, f := range s.frames {
		for _, x := range []any{f.header, f.body} {
			if err := enc.Encode(x); err != nil {
				return vector{}, fmt.Errorf("frame %d: encode %T: %w", i, x, err)
			}
			v.Values = append(v.Values, describe(reflect.ValueOf(x)))
			collectTypes(reflect.TypeOf(x), v.Types)
		}
		if err := buf.Flush(); err != nil {
			return vector{}, err
		}
	}
	v.Hex = hex.EncodeToString(out.Bytes())
	first, err := firstDefinedID(out.Bytes())
	if err != nil {
		return vector{}, err
	}
	if want := int64(64 + s.pad); first != want {
		return vector{}, fmt.Errorf("first type id is %d, want %d (Go's numbering changed?)", first, want)
	}
	v.Fresh = first == 64
	if err := decodeBack(out.Bytes(), s.frames); err != nil {
		return vector{}, err
	}
	return v, nil
}

// registerPadding makes gob assign n type ids before the vector's own types, by encoding a
// value of n distinct array types ([1]int, [2]int, ...) to nowhere.
func registerPadding(n int) error {
	for i := 1; i <= n; i++ {
		t := reflect.ArrayOf(i, reflect.TypeFor[int]())
		if err := gob.NewEncoder(io.Discard).EncodeValue(reflect.New(t).Elem()); err != nil {
			return fmt.Errorf("register padding type %v: %w", t, err)
		}
	}
	return nil
}

// describe turns a Go value into the vector's value notation. Struct fields appear only
// when non-zero, because gob omits zero fields on the wire.
func describe(v reflect.Value) value {
	switch v.Kind() {
	case reflect.Bool:
		return value{"bool": v.Bool()}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return value{"int": v.Int()}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return value{"uint": v.Uint()}
	case reflect.Float32, reflect.Float64:
		return value{"float": v.Float()}
	case reflect.String:
		return value{"string": v.String()}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return value{"bytes": hex.EncodeToString(v.Bytes())}
		}
	case reflect.Struct:
		fields := [][2]any{}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() || v.Field(i).IsZero() {
				continue
			}
			fields = append(fields, [2]any{f.Name, describe(v.Field(i))})
		}
		return value{"struct": map[string]any{"name": v.Type().Name(), "fields": fields}}
	}
	panic(fmt.Sprintf("gobvectors: no notation for %v", v.Type()))
}

// typeName is the vector notation's name of a field type; structs go by their gob name,
// which is the Go type's bare name ("" for struct{}).
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "int"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "uint"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.String:
		return "string"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
	case reflect.Struct:
		return t.Name()
	}
	panic(fmt.Sprintf("gobvectors: no type name for %v", t))
}

// collectTypes records the full field list of every struct type reachable from t.
func collectTypes(t reflect.Type, into map[string][][2]string) {
	if t.Kind() != reflect.Struct {
		return
	}
	if _, done := into[t.Name()]; done {
		return
	}
	fields := [][2]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fields = append(fields, [2]string{f.Name, typeName(f.Type)})
		collectTypes(f.Type, into)
	}
	into[t.Name()] = fields
}

// decodeBack proves the bytes are what Go itself decodes into the frames' values.
func decodeBack(data []byte, frames []frame) error {
	dec := gob.NewDecoder(bytes.NewReader(data))
	for i, f := range frames {
		for _, want := range []any{f.header, f.body} {
			got := reflect.New(reflect.TypeOf(want))
			if err := dec.DecodeValue(got); err != nil {
				return fmt.Errorf("frame %d: decode back %T: %w", i, want, err)
			}
			g, w := describe(got.Elem()), describe(reflect.ValueOf(want))
			if !reflect.DeepEqual(g, w) {
				return fmt.Errorf("frame %d: decoded %v, encoded %v", i, g, w)
			}
		}
	}
	if err := dec.DecodeValue(reflect.New(reflect.TypeFor[struct{}]())); err != io.EOF {
		return fmt.Errorf("trailing bytes after the last frame: %v", err)
	}
	return nil
}

// messages splits a gob stream into its length-prefixed messages.
func messages(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		n, rest, err := readUint(data)
		if err != nil {
			return nil, err
		}
		if uint64(len(rest)) < n {
			return nil, fmt.Errorf("message of %d bytes, only %d left", n, len(rest))
		}
		out = append(out, rest[:n])
		data = rest[n:]
	}
	return out, nil
}

// firstDefinedID reads the id of the type the stream's first message defines.
func firstDefinedID(data []byte) (int64, error) {
	msgs, err := messages(data)
	if err != nil || len(msgs) == 0 {
		return 0, fmt.Errorf("no first message: %v", err)
	}
	u, _, err := readUint(msgs[0])
	if err != nil {
		return 0, err
	}
	id := int64(u >> 1)
	if u&1 != 0 {
		id = ^id
	}
	if id >= 0 {
		return 0, fmt.Errorf("first message is a value of type %d, not a type definition", id)
	}
	return -id, nil
}

// readUint decodes gob's unsigned integer: one byte below 128, else a negated byte count
// followed by that many big-endian bytes.
func readUint(b []byte) (uint64, []byte, error) {
	if len(b) == 0 {
		return 0, nil, fmt.Errorf("truncated uint")
	}
	if b[0] < 0x80 {
		return uint64(b[0]), b[1:], nil
	}
	n := int(-int8(b[0]))
	if n > 8 || len(b) < 1+n {
		return 0, nil, fmt.Errorf("bad uint prefix %#x", b[0])
	}
	var u uint64
	for _, c := range b[1 : 1+n] {
		u = u<<8 | uint64(c)
	}
	return u, b[1+n:], nil
}
