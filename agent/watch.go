package agent

import (
	"net"

	"github.com/envlet/envlet/agent/wire"
)

// serveWatch answers Watch: the env now, then Changed on every change of
// the workload's environment, until either side closes.
func (a *Agent) serveWatch(c *net.UnixConn, p peer, req wire.Request) {
	a.refuse(c, p, CodeUnsupported, "watch is not served by this agent yet")
}
