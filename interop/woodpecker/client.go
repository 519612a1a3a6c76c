package woodpecker

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/rpc"
	"os"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// Options are the test hooks around Woodpecker's loader. The zero value starts the addon
// exactly as the Woodpecker server does.
type Options struct {
	// Env is appended to this process's environment for the addon. Woodpecker's addon
	// inherits the server's whole environment, which is where its settings come from; a
	// test sets them here instead of in its own environment.
	Env []string
	// Stderr receives every raw line the addon writes to stderr, each followed by "\n"
	// (go-plugin's ClientConfig.Stderr; Woodpecker leaves it at io.Discard).
	Stderr io.Writer
	// Logger receives what go-plugin makes of the addon's stderr lines and its own
	// messages. Woodpecker passes a zerolog adapter that accepts every level, so the
	// default here is a Trace-level hclog logger: every line goes through go-plugin's
	// hclog-JSON parser, as it does in the server.
	Logger hclog.Logger
}

// Addon is a loaded addon: the go-plugin client that owns the process and the dispensed
// log service.
type Addon struct {
	Client *plugin.Client
	RPC    *RPC
}

// Load starts the addon binary file and dispenses its log service, as Woodpecker's
// addon.Load does.
func Load(file string, opts Options) (*Addon, error) {
	cmd := exec.Command(file)
	// go-plugin appends os.Environ() after cmd.Env unless SkipHostEnv is set, and the last
	// duplicate wins; putting the host environment first ourselves lets opts.Env override
	// it while the child still sees "host environment, then the plugin variables".
	cmd.Env = append(os.Environ(), opts.Env...)
	logger := opts.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: "addon", Level: hclog.Trace, Output: io.Discard})
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: HandshakeConfig,
		Plugins:         map[string]plugin.Plugin{PluginKey: &Plugin{}},
		Cmd:             cmd,
		SkipHostEnv:     true,
		Stderr:          opts.Stderr,
		Logger:          logger,
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start addon %s: %w", file, err)
	}
	raw, err := rpcClient.Dispense(PluginKey)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("dispense %q from addon %s: %w", PluginKey, file, err)
	}
	svc, ok := raw.(*RPC)
	if !ok {
		client.Kill()
		return nil, fmt.Errorf("dispensed %T, want *RPC", raw)
	}
	return &Addon{Client: client, RPC: svc}, nil
}

// RPC is the host's view of the addon: Woodpecker's addon.RPC.
type RPC struct {
	client *rpc.Client
}

var _ Service = (*RPC)(nil)

// Raw exposes the broker stream's net/rpc client, so that tests can send what Woodpecker
// never would (malformed JSON, unknown methods) through the very same session.
func (g *RPC) Raw() *rpc.Client {
	return g.client
}

// LogFind returns the step's whole log.
func (g *RPC) LogFind(step *Step) ([]*LogEntry, error) {
	args, err := json.Marshal(step)
	if err != nil {
		return nil, err
	}
	var jsonResp []byte
	if err := g.client.Call("Plugin.LogFind", args, &jsonResp); err != nil {
		return nil, err
	}
	var resp []*LogEntry
	if err := json.Unmarshal(jsonResp, &resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// argumentsAppend is the JSON object LogAppend carries.
type argumentsAppend struct {
	Step       *Step       `json:"step"`
	LogEntries []*LogEntry `json:"log_entries"`
}

// LogAppend stores a batch of lines.
func (g *RPC) LogAppend(step *Step, logEntries []*LogEntry) error {
	args, err := json.Marshal(&argumentsAppend{Step: step, LogEntries: logEntries})
	if err != nil {
		return err
	}
	var jsonResp []byte
	return g.client.Call("Plugin.LogAppend", args, &jsonResp)
}

// LogDelete removes the step's log.
func (g *RPC) LogDelete(step *Step) error {
	args, err := json.Marshal(step)
	if err != nil {
		return err
	}
	var jsonResp []byte
	return g.client.Call("Plugin.LogDelete", args, &jsonResp)
}

// StepFinished tells the addon the step exited. Like Woodpecker, errors are only logged.
func (g *RPC) StepFinished(step *Step) {
	args, err := json.Marshal(step)
	if err != nil {
		log.Printf("could not marshal json for log addon: %v", err)
		return
	}
	var jsonResp []byte
	if err := g.client.Call("Plugin.StepFinished", args, &jsonResp); err != nil {
		log.Printf("StepFinished via addon failed: %v", err)
	}
}
