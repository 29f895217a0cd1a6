// Command barelauncher is the floor for a Go launcher of the workload
// protocol: it connects to the Unix socket in $BARE_SOCKET, sends GetEnv,
// reads one Env frame, appends its entries to its own environment and execs
// argv[1] (an absolute path) with the rest of its arguments. It does nothing
// else: no flags, no PATH lookup, no ENVLET_* filtering, no error words
// beyond a one-line reason and exit 125. envlet-exec is measured against it.
package main

import (
	"io"
	"os"
	"syscall"

	"github.com/envlet/envlet/agent/wire"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: barelauncher PROGRAM [ARGS...]")
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		fail("socket: " + err.Error())
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: os.Getenv("BARE_SOCKET")}); err != nil {
		fail("connect: " + err.Error())
	}
	if _, err := syscall.Write(fd, wire.AppendRequest(nil, wire.Request{Type: wire.TypeGetEnv})); err != nil {
		fail("write: " + err.Error())
	}
	typ, payload, err := wire.ReadFrame(fdReader(fd), make([]byte, 0, 32<<10))
	if err != nil || typ != wire.TypeEnv {
		fail("read reply")
	}
	_, entries, err := wire.DecodeEnv(payload)
	if err != nil {
		fail("decode reply")
	}
	syscall.Close(fd)
	env := os.Environ()
	for _, e := range entries {
		if !e.Unset {
			env = append(env, e.Name+"="+string(e.Value))
		}
	}
	err = syscall.Exec(os.Args[1], os.Args[1:], env)
	fail("exec: " + err.Error())
}

type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		return 0, err
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func fail(msg string) {
	os.Stderr.WriteString("barelauncher: " + msg + "\n")
	os.Exit(125)
}
