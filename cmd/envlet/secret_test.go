package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecret(t *testing.T) {
	dir := shortTempDir(t)
	bin := filepath.Join(dir, "bin")
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	os.WriteFile(bin, all, 0o600)
	binB64 := base64.StdEncoding.EncodeToString(all)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, maxSecretFile+1), 0o600)

	runCases(t, []cliCase{
		{
			name: "CreateText", args: []string{"secret", "create", "DB_PASS", "hunter2"},
			status: 201, reply: `{"name":"DB_PASS","kind":"text","size":7}`,
			want: stubRequest{Method: "POST", Path: "/v1/users/me/secrets/DB_PASS", Body: `{"value":"hunter2"}`},
		},
		{
			name: "CreateProject", args: []string{"secret", "create", "--project", "fraud", "DB_PASS", "hunter2"},
			status: 201, reply: `{"name":"DB_PASS","kind":"text","size":7}`,
			want: stubRequest{Method: "POST", Path: "/v1/projects/fraud/secrets/DB_PASS", Body: `{"value":"hunter2"}`},
		},
		{
			name: "CreateFile", args: []string{"secret", "create", "TLS", "--file", bin},
			status: 201, reply: `{"name":"TLS","kind":"file","size":344}`,
			want: stubRequest{Method: "POST", Path: "/v1/users/me/secrets/TLS", Body: `{"value":"` + binB64 + `","file":true}`},
		},
		{
			name: "CreateFileStdin", args: []string{"secret", "create", "TLS", "--file", "-"}, stdin: "a\nb\n",
			status: 201, reply: `{"name":"TLS","kind":"file","size":8}`,
			want: stubRequest{Method: "POST", Path: "/v1/users/me/secrets/TLS", Body: `{"value":"YQpiCg==","file":true}`},
		},
		{
			name: "CreateValueStdin", args: []string{"secret", "create", "--value-stdin", "S"}, stdin: "v\n",
			status: 201, reply: `{"name":"S","kind":"text","size":1}`,
			want: stubRequest{Method: "POST", Path: "/v1/users/me/secrets/S", Body: `{"value":"v"}`},
		},
		{
			name: "CreateFileTooBig", args: []string{"secret", "create", "TLS", "--file", big},
			errOut: "envlet: SECRET_TOO_LARGE: file " + big + " is over 1048576 bytes; a file secret holds at most 6750 bytes (9000 base64 characters)\n", code: 1,
		},
		{
			name: "CreateTwoSources", args: []string{"secret", "create", "S", "v", "--file", bin},
			errOut: "envlet: USAGE: secret create: give exactly one of VALUE, --value-stdin or --file\n", code: 2,
		},
		{
			name: "CreateNoSource", args: []string{"secret", "create", "S"},
			errOut: "envlet: USAGE: secret create: give exactly one of VALUE, --value-stdin or --file\n", code: 2,
		},
		{
			name: "UserAndProject", args: []string{"secret", "list", "--user", "alice", "--project", "fraud"},
			errOut: "envlet: USAGE: secret list: give --user or --project, not both\n", code: 2,
		},
		{
			name: "Set", args: []string{"secret", "set", "S", "v2"},
			reply: `{"name":"S","kind":"text","size":2}`,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/me/secrets/S", Body: `{"value":"v2"}`},
		},
		{
			name: "GetMasked", args: []string{"secret", "get", "S"},
			reply: `{"name":"S","kind":"text","size":2,"value":"********","masked":true}`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/secrets/S"},
			out:   "********\n", errOut: "envlet: note: secret S is masked; add --reveal to print its value, or --decode for its bytes\n",
		},
		{
			name: "GetReveal", args: []string{"secret", "get", "--reveal", "S"},
			reply: `{"name":"S","kind":"text","size":2,"value":"v2"}`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/secrets/S", Query: "reveal=1"},
			out:   "v2\n",
		},
		{
			name: "GetDecodeText", args: []string{"secret", "get", "--decode", "S"},
			reply: `{"name":"S","kind":"text","size":2,"value":"v2"}`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/secrets/S", Query: "reveal=1"},
			out:   "v2",
		},
		{
			name: "GetDecodeFile", args: []string{"secret", "get", "--decode", "--project", "fraud", "TLS"},
			reply: `{"name":"TLS","kind":"file","size":344,"value":"` + binB64 + `"}`,
			want:  stubRequest{Method: "GET", Path: "/v1/projects/fraud/secrets/TLS", Query: "reveal=1"},
			out:   string(all),
		},
		{
			name: "GetRevealFile", args: []string{"secret", "get", "--reveal", "TLS"},
			reply: `{"name":"TLS","kind":"file","size":8,"value":"YQpiCg=="}`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/secrets/TLS", Query: "reveal=1"},
			out:   "YQpiCg==\n",
		},
		{
			name: "GetMissing", args: []string{"secret", "get", "NOPE"},
			status: 404, reply: apiErr("ENV_VAR_NOT_FOUND", "secret NOPE does not exist for alice"),
			want: stubRequest{Method: "GET", Path: "/v1/users/me/secrets/NOPE"},
		},
		{
			name: "List", args: []string{"secret", "list"},
			reply: `[{"name":"S","kind":"text","size":2,"visibility":"private","created_at":"2026-12-01T10:00:00Z","updated_at":"2026-12-02T10:00:00Z","updated_by":"alice"},{"name":"TLS","kind":"file","size":344,"visibility":"project","project":"fraud"}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/secrets"},
			// TLS predates dated records: no date, not a made-up one.
			out: "NAME  KIND  SIZE  VISIBILITY     CREATED\nS     text  2     private        2026-12-01T10:00:00Z\nTLS   file  344   project fraud  -\n",
		},
		{
			name: "ListProject", args: []string{"secret", "list", "--project", "fraud", "--json"},
			reply: `[]`,
			want:  stubRequest{Method: "GET", Path: "/v1/secrets", Query: "project=fraud"},
			out:   "[]\n",
		},
		{
			name: "ListOtherUser", args: []string{"secret", "list", "--user", "alice", "--json"},
			reply: `[]`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/alice/secrets"},
			out:   "[]\n",
		},
		{
			name: "Delete", args: []string{"secret", "delete", "--project", "fraud", "S"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/projects/fraud/secrets/S"},
		},
		{
			name: "TooLarge", args: []string{"secret", "create", "S", "--value-stdin"}, stdin: strings.Repeat("x", 9001),
			status: 400, reply: apiErr("SECRET_TOO_LARGE", "secret S is 9001 characters, over the limit of 9000"),
			want:   stubRequest{Method: "POST", Path: "/v1/users/me/secrets/S", Body: `{"value":"` + strings.Repeat("x", 9001) + `"}`},
			errOut: "envlet: SECRET_TOO_LARGE: secret S is 9001 characters, over the limit of 9000\n", code: 1,
		},
		{
			name: "AuditHMAC", args: []string{"audit", "hmac", "--value-stdin"}, stdin: "v\n",
			reply: `{"hmac":"abcd"}`,
			want:  stubRequest{Method: "POST", Path: "/v1/audit/hmac", Body: `{"value":"v"}`},
			out:   "abcd\n",
		},
		{
			name: "AuditHMACFile", args: []string{"audit", "hmac", "--file", "-"}, stdin: "a\nb\n",
			reply: `{"hmac":"abcd"}`,
			want:  stubRequest{Method: "POST", Path: "/v1/audit/hmac", Body: `{"value":"YQpiCg=="}`},
			out:   "abcd\n",
		},
		{
			name: "AuditHMACNoSource", args: []string{"audit", "hmac"},
			errOut: "envlet: USAGE: audit hmac: give exactly one of --value-stdin or --file\n", code: 2,
		},
	})
}
