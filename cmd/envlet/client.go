package main

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
)

const (
	// defaultSocket is where the agent serves the admin API unless
	// --socket or $ENVLET_ADMIN_SOCKET say otherwise (DESIGN §4).
	defaultSocket = "/run/envlet/admin.sock"

	// baseURL is only a placeholder: every connection goes to the socket.
	baseURL = "http://envlet"

	// maxReply bounds what the CLI reads of one reply, so a confused agent
	// cannot make it allocate without limit.
	maxReply = 64 << 20

	// maxBody is the agent's limit on a request body (docs/admin-api.md).
	maxBody = 1 << 20
)

// Error codes the CLI produces itself; every other code comes from the agent.
const (
	codeUsage       = "USAGE"             // bad command line; exit 2
	codeUnavailable = "AGENT_UNAVAILABLE" // no connection, or the connection broke
	codeBadReply    = "BAD_REPLY"         // the agent answered something the CLI cannot read
	codeIO          = "IO_ERROR"          // reading a local file or stdin, writing output
	codeInvalid     = "INVALID_REQUEST"   // a local input the agent would reject anyway
	codeNotFound    = "ENV_VAR_NOT_FOUND" // the one code `env get` treats as success
)

// apiError is every error the CLI reports: an agent's
// {"error":{"code","message"}} reply, or one of the CLI's own codes above.
// Message never holds a variable's value.
type apiError struct {
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) error {
	return &apiError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// client talks HTTP/1.1 + JSON to the agent's admin socket.
type client struct {
	socket string
	hc     *http.Client
}

func newClient(socket string) *client {
	tr := &http.Transport{
		// Proxy stays nil: $HTTP_PROXY must never capture admin traffic.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, errorf(codeUnavailable, "connect %s: %s", socket, reason(err))
			}
			return conn, nil
		},
		DisableCompression: true,
	}
	return &client{
		socket: socket,
		hc: &http.Client{
			Transport: tr,
			// The admin API never redirects; following one could turn a
			// DELETE of one thing into a DELETE of another.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
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

// do sends one request and returns the body of a 2xx reply.
// body, when not nil, is sent as is with Content-Type application/json.
// It fails with:
//   - AGENT_UNAVAILABLE when the socket cannot be reached or the connection breaks,
//   - the agent's own code and message for a reply with an error body,
//   - BAD_REPLY for a non-2xx reply without one, or a reply over maxReply.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
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
		return nil, errorf(codeUsage, "build request %s %s: %v", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return nil, ae
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, errorf(codeUnavailable, "%s %s: %s", method, path, reason(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, errorf(codeUnavailable, "read reply to %s %s: %s", method, path, reason(err))
	}
	if len(data) > maxReply {
		return nil, errorf(codeBadReply, "reply to %s %s is larger than %d bytes", method, path, maxReply)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	var eb struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		return nil, &apiError{Code: eb.Error.Code, Message: oneLine(eb.Error.Message)}
	}
	// The body is not quoted: it is not known to be free of values.
	return nil, errorf(codeBadReply, "%s %s: HTTP %s without an error body", method, path, resp.Status)
}

// call is do with the request body marshalled from in (nil for none) and the
// reply decoded into out (nil to ignore it). It returns the raw reply too,
// for --json.
func (c *client) call(ctx context.Context, method, path string, query url.Values, in, out any) ([]byte, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = marshal(in); err != nil {
			return nil, errorf(codeInvalid, "encode request %s %s: %v", method, path, err)
		}
	}
	data, err := c.do(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := decode(data, out); err != nil {
			return nil, errorf(codeBadReply, "decode reply to %s %s: %v", method, path, err)
		}
	}
	return data, nil
}

func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// decode unmarshals a reply. Its errors say where the reply went wrong but
// never quote it: encoding/json's own messages can hold a piece of a value
// ("cannot unmarshal number 42 into ...").
func decode(data []byte, out any) error {
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

// segment escapes one variable part of a URL path. Empty parts and the dot
// segments would change which resource a path names, so they are refused
// here rather than sent.
func segment(what, s string) (string, error) {
	switch s {
	case "":
		return "", errorf(codeUsage, "%s must not be empty", what)
	case ".", "..":
		return "", errorf(codeUsage, "%s must not be %q", what, s)
	}
	return url.PathEscape(s), nil
}

// apiPath fills each %s of format with an escaped segment; parts alternate
// a description (for errors) and the value: apiPath("/v1/projects/%s", "project", p).
func apiPath(format string, parts ...string) (string, error) {
	segs := make([]any, 0, len(parts)/2)
	for i := 0; i+1 < len(parts); i += 2 {
		s, err := segment(parts[i], parts[i+1])
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
