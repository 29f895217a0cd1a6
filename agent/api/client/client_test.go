package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/agent/api/client"
)

// serve answers every request on a real Unix socket in a short temp dir
// with status and body, and records the last request's method, path and body.
func serve(t *testing.T, status int, body string) (socket string, last *http.Request) {
	t.Helper()
	dir, err := os.MkdirTemp("", "apic")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket = filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	last = new(http.Request)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*last = *r.Clone(context.Background())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return socket, last
}

func TestErrorReply(t *testing.T) {
	t.Parallel()
	sock, _ := serve(t, 404, `{"error":{"code":"ENV_VAR_NOT_FOUND","message":"no variable\n  X"}}`)
	c := client.New(sock)
	defer c.Close()
	_, err := c.Call(context.Background(), http.MethodGet, "/v1/users/me/env/X", nil, nil, new(api.Variable))
	var ae *api.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want *api.Error", err, err)
	}
	if ae.Code != api.CodeNotFound || ae.Message != "no variable X" {
		t.Fatalf("err = %+v, want ENV_VAR_NOT_FOUND with the message on one line", ae)
	}
	if api.CodeOf(err) != api.CodeNotFound {
		t.Fatalf("CodeOf = %q", api.CodeOf(err))
	}
}

func TestReplies(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		status int
		body   string
		code   string // "" for success
	}{
		{"OK", 200, `{"user":"alice","uid":1001,"admin":true}`, ""},
		{"ErrorWithoutBody", 500, `oops canary-value`, api.CodeBadReply},
		{"ErrorWithoutCode", 400, `{"error":{"message":"x"}}`, api.CodeBadReply},
		{"WrongShape", 200, `{"uid":"canary-value"}`, api.CodeBadReply},
		{"NotJSON", 200, `canary-value`, api.CodeBadReply},
		{"Busy", 503, `{"error":{"code":"BUSY","message":"retry"}}`, api.CodeBusy},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sock, last := serve(t, tt.status, tt.body)
			w, err := client.New(sock).Whoami(context.Background())
			if got := api.CodeOf(err); got != tt.code {
				t.Fatalf("code = %q (err %v), want %q", got, err, tt.code)
			}
			if err != nil && strings.Contains(err.Error(), "canary-value") {
				t.Fatalf("error quotes the reply: %v", err)
			}
			if tt.code == "" && (w.User != "alice" || w.UID != 1001 || !w.Admin) {
				t.Fatalf("whoami = %+v", w)
			}
			if last.Method != http.MethodGet || last.URL.Path != "/v1/whoami" {
				t.Fatalf("request = %s %s", last.Method, last.URL.Path)
			}
		})
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := client.New(sock).Status(context.Background())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeAgentUnavailable {
		t.Fatalf("err = %v, want AGENT_UNAVAILABLE", err)
	}
	if !strings.Contains(ae.Message, "no such file or directory") {
		t.Fatalf("message = %q, want the reason", ae.Message)
	}
}

func TestRequestBody(t *testing.T) {
	t.Parallel()
	sock, last := serve(t, 201, `{"name":"X","value":"********","secret":true,"masked":true}`)
	v := "<a&b>"
	var got api.Variable
	p, err := client.Path("/v1/users/%s/env/%s", "user", "me", "NAME", "X")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(sock).Call(context.Background(), http.MethodPost, p, nil, api.VariableWrite{Value: &v}, &got); err != nil {
		t.Fatal(err)
	}
	if last.Method != http.MethodPost || last.URL.Path != "/v1/users/me/env/X" || last.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("request = %s %s %q", last.Method, last.URL.Path, last.Header.Get("Content-Type"))
	}
	if !got.Masked || got.Name != "X" {
		t.Fatalf("reply = %+v", got)
	}
}

func TestPath(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		parts []string
		want  string
		code  string
	}{
		{[]string{"project", "a/b c"}, "/v1/projects/a%2Fb%20c", ""},
		{[]string{"project", ""}, "", api.CodeInvalidRequest},
		{[]string{"project", ".."}, "", api.CodeInvalidRequest},
		{[]string{"project", "."}, "", api.CodeInvalidRequest},
	} {
		got, err := client.Path("/v1/projects/%s", tt.parts...)
		if api.CodeOf(err) != tt.code || got != tt.want {
			t.Errorf("Path(%q) = %q, %v; want %q, code %q", tt.parts, got, err, tt.want, tt.code)
		}
	}
}
