// Command floorserver is the floor for a Go server of the workload
// protocol: on a Unix socket it accepts a connection, reads the peer's
// credentials (SO_PEERCRED, as the agent does), reads one request frame and
// answers with a prebuilt Env frame of -vars generated variables (the same
// frame, byte for byte in size, that the agent serves a workload registered
// with those variables), then closes. It does no matching, no resolution, no
// copy into locked memory, no audit and no logging: what is left is the cost
// of the socket, the framing and the Go runtime, which the agent cannot go
// below. It prints "ready" on stdout once it listens, and serves until
// killed.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/agent/wire"
	"github.com/envlet/envlet/bench/internal/gen"
)

func main() {
	socket := flag.String("socket", "", "Unix socket to listen on")
	vars := flag.Int("vars", 64, "generated variables in the Env frame")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "floorserver: -socket is required")
		os.Exit(2)
	}
	frame := gen.EnvFrame(0, *vars, 1)
	os.Remove(*socket)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: *socket, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "floorserver:", err)
		os.Exit(1)
	}
	os.Chmod(*socket, 0o666)
	fmt.Println("ready")
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			continue
		}
		go serve(c, frame)
	}
}

func serve(c *net.UnixConn, frame []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var cerr error
	raw.Control(func(fd uintptr) {
		_, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil {
		return
	}
	// Through a buffer, so header and payload come in with one read(2),
	// as the agent reads them.
	var buf [2048]byte
	t, payload, err := wire.ReadFrame(bufio.NewReaderSize(c, 2048), buf[:])
	if err != nil {
		return
	}
	if _, err := wire.DecodeRequest(t, payload); err != nil {
		c.Write(wire.AppendError(nil, "BAD_REQUEST", "bad request"))
		return
	}
	c.Write(frame)
}
