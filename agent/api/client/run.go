package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/envlet/envlet/agent/api"
)

// Run is a self-service run the agent holds for this client (POST
// /v1/runs): its registration lasts as long as the connection that asked
// for it. Keep the Run until the program launched with it has exited,
// then End it; if this process dies, the kernel closes the connection and
// the agent ends the run all the same.
type Run struct {
	// Started is the registration the agent made: its id, the token file
	// and the workload socket to launch the program with.
	Started api.RunStarted

	conn  *net.UnixConn
	done  chan struct{}
	ended bool // the agent said the run ended (RunEnded), before done closed
}

// setupTimeout bounds connecting, sending the request and reading the
// first line of the reply.
const setupTimeout = 30 * time.Second

// StartRun asks the agent for a run and returns once it is registered.
// It uses a connection of its own, outside the client's pool, since the
// connection is the run's lifetime. Errors are *api.Error as for Do.
func (c *Client) StartRun(ctx context.Context, req api.RunRequest) (*Run, error) {
	body, err := Marshal(req)
	if err != nil {
		return nil, errorf(api.CodeInvalidRequest, "encode run request: %v", err)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, errorf(api.CodeAgentUnavailable, "connect %s: %s", c.socket, reason(err))
	}
	conn := nc.(*net.UnixConn)
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	deadline := time.Now().Add(setupTimeout)
	if dl, has := ctx.Deadline(); has && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetDeadline(deadline)
	hreq, err := http.NewRequest(http.MethodPost, baseURL+"/v1/runs", bytes.NewReader(body))
	if err != nil {
		return nil, errorf(api.CodeInvalidRequest, "build run request: %v", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/x-ndjson")
	if err := hreq.Write(conn); err != nil {
		return nil, errorf(api.CodeAgentUnavailable, "POST /v1/runs: %s", reason(err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), hreq)
	if err != nil {
		return nil, errorf(api.CodeAgentUnavailable, "read reply to POST /v1/runs: %s", reason(err))
	}
	if resp.StatusCode != http.StatusCreated {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb api.ErrorReply
		if json.Unmarshal(data, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
			return nil, &api.Error{Code: eb.Error.Code, Message: oneLine(eb.Error.Message)}
		}
		return nil, errorf(api.CodeBadReply, "POST /v1/runs: HTTP %s without an error body", resp.Status)
	}
	dec := json.NewDecoder(resp.Body)
	r := &Run{conn: conn, done: make(chan struct{})}
	if err := dec.Decode(&r.Started); err != nil || r.Started.ID == "" {
		return nil, errorf(api.CodeBadReply, "POST /v1/runs: the reply does not start with the run")
	}
	conn.SetDeadline(time.Time{})
	go func() {
		defer close(r.done)
		var end api.RunEnded
		if dec.Decode(&end) == nil && end.Ended {
			r.ended = true
		}
	}()
	ok = true
	return r, nil
}

// Done is closed when the run has ended on the agent's side: after End,
// or when the agent stopped or the connection broke.
func (r *Run) Done() <-chan struct{} { return r.done }

// End ends the run: it closes this side of the connection, waits up to
// timeout for the agent to say the registration is gone, and closes the
// connection. It reports whether the agent confirmed the end in time.
func (r *Run) End(timeout time.Duration) bool {
	r.conn.CloseWrite()
	t := time.NewTimer(timeout)
	defer t.Stop()
	confirmed := false
	select {
	case <-r.done:
		confirmed = r.ended
	case <-t.C:
	}
	r.conn.Close()
	return confirmed
}
