package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/envlet/envlet/agent/api"
)

// DefaultSocket is where the agent serves the admin API unless configured
// otherwise (docs/design.md §4).
const DefaultSocket = "/run/envlet/admin.sock"

// MaxReply bounds what a client reads of one reply, so a confused agent
// cannot make it allocate without limit.
const MaxReply = 64 << 20

// baseURL is only a placeholder: every connection goes to the socket.
const baseURL = "http://envlet"

// Client talks HTTP/1.1 + JSON to one admin socket. It is safe for
// concurrent use and keeps connections alive between calls.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client of the admin socket at path socket. Nothing is dialed
// until the first call.
func New(socket string) *Client {
	tr := &http.Transport{
		// Proxy stays nil: $HTTP_PROXY must never capture admin traffic.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, errorf(api.CodeAgentUnavailable, "connect %s: %s", socket, reason(err))
			}
			return conn, nil
		},
		DisableCompression: true,
	}
	return &Client{
		socket: socket,
		hc: &http.Client{
			Transport: tr,
			// The admin API never redirects; following one could turn a
			// DELETE of one thing into a DELETE of another.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Socket is the path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close closes idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

func errorf(code, format string, args ...any) *api.Error {
	return &api.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// reason is the innermost useful text of a network error: "connect: no such
// file or directory" becomes "no such file or directory".
func reason(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// Do sends one request and returns the body of a 2xx reply. path is the
// escaped path (see Path); body, when not nil, is sent as is with
// Content-Type application/json. Every error is an *api.Error:
//   - CodeAgentUnavailable when the socket cannot be reached or the
//     connection breaks,
//   - the agent's own code and message for a reply with an error body,
//   - CodeBadReply for a non-2xx reply without one, or a reply over MaxReply,
//   - CodeInvalidRequest when method or path cannot form a request.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	u := baseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, errorf(api.CodeInvalidRequest, "build request %s %s: %v", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, ae
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, errorf(api.CodeAgentUnavailable, "%s %s: %s", method, path, reason(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxReply+1))
	if err != nil {
		return nil, errorf(api.CodeAgentUnavailable, "read reply to %s %s: %s", method, path, reason(err))
	}
	if len(data) > MaxReply {
		return nil, errorf(api.CodeBadReply, "reply to %s %s is larger than %d bytes", method, path, MaxReply)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	var eb api.ErrorReply
	if json.Unmarshal(data, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		return nil, &api.Error{Code: eb.Error.Code, Message: oneLine(eb.Error.Message)}
	}
	// The body is not quoted: it is not known to be free of values.
	return nil, errorf(api.CodeBadReply, "%s %s: HTTP %s without an error body", method, path, resp.Status)
}

// Call is Do with the request body marshalled from in (nil for none) and the
// reply decoded into out (nil to ignore it). It returns the raw reply too,
// for callers that print it as is.
func (c *Client) Call(ctx context.Context, method, path string, query url.Values, in, out any) ([]byte, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = Marshal(in); err != nil {
			return nil, errorf(api.CodeInvalidRequest, "encode request %s %s: %v", method, path, err)
		}
	}
	data, err := c.Do(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := Decode(data, out); err != nil {
			return nil, errorf(api.CodeBadReply, "decode reply to %s %s: %v", method, path, err)
		}
	}
	return data, nil
}

// Whoami asks who the agent takes the caller for.
func (c *Client) Whoami(ctx context.Context) (*api.Whoami, error) {
	var w api.Whoami
	if _, err := c.Call(ctx, http.MethodGet, "/v1/whoami", nil, nil, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// Status asks for the agent's backend, revision, staleness and counts.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var s api.Status
	if _, err := c.Call(ctx, http.MethodGet, "/v1/status", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Marshal encodes a request body as the agent expects it: JSON without
// HTML escaping and without a trailing newline.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Decode unmarshals a reply. Its errors say where the reply went wrong but
// never quote it: encoding/json's own messages can hold a piece of a value
// ("cannot unmarshal number 42 into ...").
func Decode(data []byte, out any) error {
	err := json.Unmarshal(data, out)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Errorf("field %q is not a %s", te.Field, te.Type)
		}
		return fmt.Errorf("reply is not a %s", te.Type)
	}
	return errors.New("reply is not the expected JSON")
}

// Segment escapes one variable part of a URL path; what names it in the
// error. Empty parts and the dot segments would change which resource a
// path names, so they are refused (CodeInvalidRequest) rather than sent.
func Segment(what, s string) (string, error) {
	switch s {
	case "":
		return "", errorf(api.CodeInvalidRequest, "%s must not be empty", what)
	case ".", "..":
		return "", errorf(api.CodeInvalidRequest, "%s must not be %q", what, s)
	}
	return url.PathEscape(s), nil
}

// Path fills each %s of format with an escaped segment; parts alternate a
// description (for errors) and the value:
// Path("/v1/projects/%s", "project", p).
func Path(format string, parts ...string) (string, error) {
	segs := make([]any, 0, len(parts)/2)
	for i := 0; i+1 < len(parts); i += 2 {
		s, err := Segment(parts[i], parts[i+1])
		if err != nil {
			return "", err
		}
		segs = append(segs, s)
	}
	return fmt.Sprintf(format, segs...), nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
