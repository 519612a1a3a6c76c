package main

import (
	"net/rpc"
	"strings"
)

// req and resp build net/rpc's own header types, so that field names, order and types are
// exactly what net/rpc encodes.
func req(method string, seq uint64) rpc.Request {
	return rpc.Request{ServiceMethod: method, Seq: seq}
}

func resp(method string, seq uint64, errText string) rpc.Response {
	return rpc.Response{ServiceMethod: method, Seq: seq, Error: errText}
}

// empty is net/rpc's error body (invalidRequest) and go-plugin's Ping/Quit reply type.
type empty = struct{}

// bigBody is 300 KiB of deterministic bytes covering every byte value, beyond one yamux
// window (256 KiB), so its message length prefix takes 4 bytes.
func bigBody() []byte {
	b := make([]byte, 300<<10)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// methodOfHeaderLen returns a ServiceMethod that makes a Seq-0 Request header message
// exactly n bytes long when Request has id 64: 2 bytes of type id, 1 field delta, 1 length
// byte, the string, 1 end-of-struct byte.
func methodOfHeaderLen(n int) string {
	const prefix = "Plugin.Log"
	return prefix + strings.Repeat("x", n-5-len(prefix))
}

const (
	findArgs   = `{"id":5,"uuid":"01JABCDEF","pipeline_id":3,"pid":2,"ppid":1,"name":"build","state":"running","exit_code":0,"started":1735689600,"type":"commands"}`
	appendArgs = `{"step":{"id":5,"uuid":"","pipeline_id":3,"pid":2,"ppid":1,"name":"build","state":"running","exit_code":0},"log_entries":[{"id":0,"step_id":5,"time":1,"line":0,"data":"aGVsbG8=","type":0}]}`
	findReply  = `[{"id":0,"step_id":5,"time":1,"line":0,"data":"aGVsbG8=","type":0},{"id":0,"step_id":5,"time":2,"line":1,"data":null,"type":2}]`
)

// specs lists every vector, in the order they appear in vectors.json.
func specs() []spec {
	nonUTF8 := []byte{0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0xed, 0xa0, 0x80, '\n'}
	return []spec{
		{name: "host_control_dispense", frames: []frame{
			{req("Dispenser.Dispense", 0), "log"},
		}},
		{name: "host_control_ping_quit", frames: []frame{
			{req("Control.Ping", 0), true},
			{req("Control.Quit", 1), true},
		}},
		{name: "host_broker_calls", frames: []frame{
			{req("Plugin.LogFind", 0), []byte(`{"id":5}`)},
			{req("Plugin.LogFind", 1), []byte(`{"id":5}`)},
			{req("Plugin.LogAppend", 2), []byte(appendArgs)},
			{req("Plugin.StepFinished", 127), []byte(findArgs)},
			{req("Plugin.LogDelete", 128), []byte(findArgs)},
			{req("Plugin.LogFind", 65535), []byte(findArgs)},
			{req("Plugin.LogFind", 1<<40), []byte(findArgs)},
		}},
		{name: "host_big_body", frames: []frame{
			{req("Plugin.LogAppend", 0), bigBody()},
			{req("Plugin.LogFind", 1), []byte(`{"id":5}`)},
		}},
		{name: "host_binary_and_empty_bodies", frames: []frame{
			{req("Plugin.LogAppend", 0), nonUTF8},
			{req("Plugin.LogAppend", 1), []byte{}},
			{req("Plugin.LogFind", 2), []byte("{\"name\":\"\u00e9\u4e16\U0001f600\"}")},
		}},
		{name: "host_header_length_127_then_128", frames: []frame{
			{req(methodOfHeaderLen(127), 0), []byte{}},
			{req(methodOfHeaderLen(128), 0), []byte{}},
		}},
		{name: "plugin_control_dispense_reply", frames: []frame{
			{resp("Dispenser.Dispense", 0, ""), uint32(1)},
			{resp("Dispenser.Dispense", 1, ""), uint32(300)},
		}},
		{name: "plugin_control_ping_quit_replies", frames: []frame{
			{resp("Control.Ping", 0, ""), empty{}},
			{resp("Control.Quit", 1, ""), empty{}},
		}},
		{name: "plugin_broker_bytes_replies", frames: []frame{
			{resp("Plugin.LogFind", 0, ""), []byte(findReply)},
			{resp("Plugin.LogAppend", 1, ""), []byte{}},
			{resp("Plugin.LogFind", 2, ""), []byte("[]")},
			{resp("Plugin.LogFind", 3, ""), bigBody()[:70000]},
		}},
		{name: "plugin_error_seq0", frames: []frame{
			{resp("Plugin.LogFind", 0, "boom"), empty{}},
			{resp("Plugin.LogFind", 1, "invalid step id 0"), empty{}},
			{resp("Plugin.LogFind", 2, ""), []byte("[]")},
		}},
		{name: "plugin_error_seq1", frames: []frame{
			{resp("Plugin.LogAppend", 1, "boom"), empty{}},
			{resp("Plugin.LogAppend", 0, ""), []byte{}},
		}},
		{name: "plugin_unknown_method_error", frames: []frame{
			{resp("Plugin.Nope", 0, "rpc: can't find method Plugin.Nope"), empty{}},
			{resp("Nope", 1, "rpc: service/method request ill-formed: Nope"), empty{}},
		}},
		// Ids moved up by types the process encoded earlier.
		{name: "host_broker_calls_id65", pad: 1, frames: []frame{
			{req("Plugin.LogFind", 0), []byte(`{"id":5}`)},
			{req("Plugin.LogAppend", 1), []byte(appendArgs)},
		}},
		{name: "plugin_error_then_reply_ids66_67", pad: 2, frames: []frame{
			{resp("Plugin.LogFind", 0, "boom"), empty{}},
			{resp("Plugin.LogFind", 1, ""), []byte(findReply)},
			{resp("Plugin.LogFind", 2, "boom again"), empty{}},
		}},
		{name: "plugin_control_replies_ids69_70", pad: 5, frames: []frame{
			{resp("Dispenser.Dispense", 0, ""), uint32(1)},
			{resp("Control.Ping", 1, ""), empty{}},
		}},
		// Id 134 takes 3 bytes where a definition of id 64 takes 1 (7f): every definition
		// message grows by 2 bytes and every value's type id by 1.
		{name: "host_dispense_id134_two_byte_growth", pad: 70, frames: []frame{
			{req("Dispenser.Dispense", 0), "log"},
			{req("Plugin.LogFind", 1), []byte(`{"id":5}`)},
		}},
		{name: "plugin_error_ids134_135_two_byte_growth", pad: 70, frames: []frame{
			{resp("Plugin.LogFind", 0, "boom"), empty{}},
			{resp("Plugin.LogFind", 1, ""), []byte(findReply)},
			{resp("Control.Ping", 2, ""), empty{}},
		}},
	}
}

func findSpec(name string) (spec, bool) {
	for _, s := range specs() {
		if s.name == name {
			return s, true
		}
	}
	return spec{}, false
}
