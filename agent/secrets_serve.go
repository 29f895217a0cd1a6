package agent

import (
	"net"

	"github.com/envlet/envlet/agent/wire"
)

// serveSecret answers GetSecret: a secret the calling workload may read.
func (a *Agent) serveSecret(c *net.UnixConn, p peer, req wire.Request) {
	a.refuse(c, p, CodeUnsupported, "secrets are not served by this agent yet")
}
