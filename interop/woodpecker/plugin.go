package woodpecker

import (
	"net/rpc"

	"github.com/hashicorp/go-plugin"
)

// PluginKey is the name under which Woodpecker registers and dispenses the log plugin.
const PluginKey = "log"

// HandshakeConfig is Woodpecker's: an addon built for it checks exactly this cookie.
var HandshakeConfig = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "WOODPECKER_LOG_ADDON_PLUGIN",
	MagicCookieValue: "woodpecker-plugin-magic-cookie-value",
}

// Plugin is the go-plugin net/rpc glue. Impl is only used on the plugin side (Serve).
type Plugin struct {
	Impl Service
}

// Server is called in the plugin process for each dispensed connection.
func (p *Plugin) Server(*plugin.MuxBroker) (any, error) {
	return &RPCServer{Impl: p.Impl}, nil
}

// Client is called in the host once the broker stream for "log" is open.
func (*Plugin) Client(_ *plugin.MuxBroker, c *rpc.Client) (any, error) {
	return &RPC{client: c}, nil
}
