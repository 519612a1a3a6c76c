// Package woodpecker re-states, in our own words, the log-addon client that the Woodpecker
// server embeds (go.woodpecker-ci.org/woodpecker/v3 server/services/log/addon and the
// server/model types it marshals).
//
// Why a re-statement: the Go module proxy reachable from this project's machines refuses
// go.woodpecker-ci.org/woodpecker/v3, so Woodpecker's own addon.Load cannot be imported.
// Everything that reaches the wire is kept identical to Woodpecker v3: the go-plugin
// v1.8.0 ClientConfig (HandshakeConfig, the "log" plugin key, exec.Command(file) with no
// arguments, no AutoMTLS), the four net/rpc calls with JSON-encoded []byte arguments and
// *[]byte replies, and the JSON tags of Step and LogEntry. The only additions are test
// hooks a real server does not need (extra environment, a raw stderr tee, access to the
// raw *rpc.Client), and the server half used by the Go reference plugin.
package woodpecker
