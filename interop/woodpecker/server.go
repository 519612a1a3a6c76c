package woodpecker

import (
	"encoding/json"

	"github.com/hashicorp/go-plugin"
)

// Serve runs impl as a Woodpecker log addon (the plugin side), as Woodpecker's addon.Serve.
// Only the Go reference plugin uses it: it proves the test harness before the Rust binary
// exists.
func Serve(impl Service) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: HandshakeConfig,
		Plugins:         map[string]plugin.Plugin{PluginKey: &Plugin{Impl: impl}},
	})
}

// RPCServer is the net/rpc receiver registered as "Plugin".
type RPCServer struct {
	Impl Service
}

// LogFind answers with the step's log as JSON.
func (s *RPCServer) LogFind(args []byte, resp *[]byte) error {
	var a Step
	if err := json.Unmarshal(args, &a); err != nil {
		return err
	}
	entries, err := s.Impl.LogFind(&a)
	if err != nil {
		return err
	}
	*resp, err = json.Marshal(entries)
	return err
}

// LogAppend stores a batch.
func (s *RPCServer) LogAppend(args []byte, resp *[]byte) error {
	var a argumentsAppend
	if err := json.Unmarshal(args, &a); err != nil {
		return err
	}
	*resp = []byte{}
	return s.Impl.LogAppend(a.Step, a.LogEntries)
}

// LogDelete removes a step's log.
func (s *RPCServer) LogDelete(args []byte, resp *[]byte) error {
	var a Step
	if err := json.Unmarshal(args, &a); err != nil {
		return err
	}
	*resp = []byte{}
	return s.Impl.LogDelete(&a)
}

// StepFinished forwards the notification; it never fails.
func (s *RPCServer) StepFinished(args []byte, resp *[]byte) error {
	var a Step
	if err := json.Unmarshal(args, &a); err != nil {
		return err
	}
	*resp = []byte{}
	s.Impl.StepFinished(&a)
	return nil
}
