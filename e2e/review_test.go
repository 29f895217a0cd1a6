package e2e

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/envlet/envlet/agent/wire"
)

// TestWorkloadSocketRefusesReplyFrames: a peer that sends only the header
// of a reply-type frame declaring 16 MiB is refused from the header, with
// BAD_REQUEST, without the agent waiting for (or setting memory aside for)
// the payload.
func TestWorkloadSocketRefusesReplyFrames(t *testing.T) {
	a := startAgent(t, "")
	for _, tc := range []struct {
		name string
		typ  wire.Type
		n    uint32
		want string
	}{
		{"Env 16 MiB", wire.TypeEnv, wire.MaxPayload, "not a request"},
		{"Secret 1 MiB", wire.TypeSecret, 4 + wire.MaxValue, "not a request"},
		{"GetSecret over limit", wire.TypeGetSecret, 2 + wire.MaxToken + 2 + wire.MaxName + 1, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", a.workSock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h := append([]byte(wire.Magic), wire.Version, byte(tc.typ), 0, 0, 0, 0, 0, 0)
			binary.BigEndian.PutUint32(h[8:], tc.n)
			if _, err := c.Write(h); err != nil {
				t.Fatal(err)
			}
			// The payload never comes; the connection stays open for
			// writing, so only a decision from the header answers.
			typ, p, err := wire.ReadFrame(c, nil)
			if err != nil || typ != wire.TypeError {
				t.Fatalf("reply = %v, %v; want an Error frame", typ, err)
			}
			code, msg, _ := wire.DecodeError(p)
			if code != "BAD_REQUEST" || !strings.Contains(msg, tc.want) {
				t.Fatalf("reply = %s %q; want BAD_REQUEST saying %q", code, msg, tc.want)
			}
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after the refusal: %v, want the connection closed", err)
			}
		})
	}
}
