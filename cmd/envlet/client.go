package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/envlet/envlet/agent/api"
	adminclient "github.com/envlet/envlet/agent/api/client"
)

const (
	// defaultSocket is where the agent serves the admin API unless
	// --socket or $ENVLET_ADMIN_SOCKET say otherwise.
	defaultSocket = adminclient.DefaultSocket

	// maxBody is the agent's limit on a request body (docs/admin-api.md).
	maxBody = api.MaxBody
)

// Error codes the CLI branches on or produces. USAGE and IO_ERROR are the
// CLI's own; the others are the admin API's and its client's (agent/api).
const (
	codeUsage       = "USAGE"                  // bad command line; exit 2
	codeIO          = "IO_ERROR"               // reading a local file or stdin, writing output
	codeUnavailable = api.CodeAgentUnavailable // no connection, or the connection broke
	codeBadReply    = api.CodeBadReply         // the agent answered something the CLI cannot read
	codeInvalid     = api.CodeInvalidRequest   // a local input the agent would reject anyway
	codeNotFound    = api.CodeNotFound         // the one code `env get` treats as success
)

// apiError is every error the CLI reports: an agent's
// {"error":{"code","message"}} reply, one of the client's codes, or one of
// the CLI's own above. Message never holds a variable's value.
type apiError = api.Error

func errorf(code, format string, args ...any) error {
	return &apiError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// client is the admin API client (agent/api/client) under the names the
// commands call it by.
type client struct{ c *adminclient.Client }

func newClient(socket string) *client { return &client{adminclient.New(socket)} }

func (c *client) do(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	return c.c.Do(ctx, method, path, query, body)
}

func (c *client) call(ctx context.Context, method, path string, query url.Values, in, out any) ([]byte, error) {
	return c.c.Call(ctx, method, path, query, in, out)
}

var decode = adminclient.Decode

// segment escapes one variable part of a URL path; a part that would change
// which resource the path names is a USAGE error.
func segment(what, s string) (string, error) {
	seg, err := adminclient.Segment(what, s)
	return seg, asUsage(err)
}

// apiPath fills each %s of format with an escaped segment; parts alternate
// a description (for errors) and the value: apiPath("/v1/projects/%s", "project", p).
func apiPath(format string, parts ...string) (string, error) {
	p, err := adminclient.Path(format, parts...)
	return p, asUsage(err)
}

// asUsage turns the client's refusal of a path segment into a USAGE error:
// on the command line it is the user's argument that is wrong.
func asUsage(err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return &apiError{Code: codeUsage, Message: ae.Message}
	}
	return err
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
