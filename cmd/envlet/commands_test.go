package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	varFoo    = `{"name":"FOO","value":"bar","secret":false,"masked":false}`
	varMasked = `{"name":"API_TOKEN","value":"********","secret":true,"masked":true}`
	project1  = `{"name":"fraud","owners":["alice"],"members":["alice","bob"],"groups":[]}`
)

func apiErr(code, msg string) string {
	return `{"error":{"code":"` + code + `","message":"` + msg + `"}}`
}

type cliCase struct {
	name   string
	args   []string // after --socket SOCK
	stdin  string
	status int // 0: 200
	reply  string
	want   stubRequest // Method "": no request may be sent
	out    string
	errOut string
	code   int
}

func runCases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status := tt.status
			if status == 0 {
				status = http.StatusOK
			}
			s := startStub(t, status, tt.reply)
			out, errOut, code := runCLI(t, tt.stdin, append([]string{"--socket", s.socket}, tt.args...)...)
			reqs := s.requests()
			switch {
			case tt.want.Method == "" && len(reqs) != 0:
				t.Errorf("sent %+v, want no request", reqs)
			case tt.want.Method != "" && len(reqs) != 1:
				t.Errorf("sent %d requests %+v, want 1", len(reqs), reqs)
			case tt.want.Method != "" && reqs[0] != tt.want:
				t.Errorf("sent\n %+v\nwant\n %+v", reqs[0], tt.want)
			}
			if out != tt.out {
				t.Errorf("stdout\n%q\nwant\n%q", out, tt.out)
			}
			if errOut != tt.errOut {
				t.Errorf("stderr\n%q\nwant\n%q", errOut, tt.errOut)
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "Create", args: []string{"env", "create", "FOO", "bar"},
			status: 201, reply: varFoo,
			want: stubRequest{Method: "POST", Path: "/v1/users/me/env/FOO", Body: `{"value":"bar"}`},
		},
		{
			name: "CreateSecretFlagFirst", args: []string{"env", "create", "--secret", "--user", "alice", "FOO", "bar"},
			status: 201, reply: varFoo,
			want: stubRequest{Method: "POST", Path: "/v1/users/alice/env/FOO", Body: `{"value":"bar","secret":true}`},
		},
		{
			name: "CreateFlagsLast", args: []string{"env", "create", "FOO", "bar", "--user", "alice", "--secret"},
			status: 201, reply: varFoo,
			want: stubRequest{Method: "POST", Path: "/v1/users/alice/env/FOO", Body: `{"value":"bar","secret":true}`},
		},
		{
			name: "CreateUserOnGroup", args: []string{"env", "--user", "alice", "create", "FOO", "bar"},
			status: 201, reply: varFoo,
			want: stubRequest{Method: "POST", Path: "/v1/users/alice/env/FOO", Body: `{"value":"bar"}`},
		},
		{
			name: "CreateExists", args: []string{"env", "create", "FOO", "bar"},
			status: 409, reply: apiErr("ENV_VAR_ALREADY_EXISTS", "variable FOO already exists"),
			want:   stubRequest{Method: "POST", Path: "/v1/users/me/env/FOO", Body: `{"value":"bar"}`},
			errOut: "envlet: ENV_VAR_ALREADY_EXISTS: variable FOO already exists\n", code: 1,
		},
		{
			name: "CreateMissingValue", args: []string{"env", "create", "FOO"},
			errOut: "envlet: USAGE: env create: missing VALUE (or --value-stdin)\n", code: 2,
		},
		{
			name: "CreateTooManyArgs", args: []string{"env", "create", "FOO", "bar", "baz"},
			errOut: "envlet: USAGE: env create: got 3 argument(s), want NAME VALUE\n", code: 2,
		},
		{
			name: "Set", args: []string{"env", "set", "--user", "alice", "NAME", "VALUE"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/alice/env/NAME", Body: `{"value":"VALUE"}`},
		},
		{
			name: "SetDashValueAfterDoubleDash", args: []string{"env", "set", "NAME", "--", "-5"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/me/env/NAME", Body: `{"value":"-5"}`},
		},
		{
			name: "SetEmptyValue", args: []string{"env", "set", "NAME", ""},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/me/env/NAME", Body: `{"value":""}`},
		},
		{
			name: "SetSecretFalse", args: []string{"env", "set", "--secret=false", "NAME", "v"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/me/env/NAME", Body: `{"value":"v","secret":false}`},
		},
		{
			name: "SetFromSecret", args: []string{"env", "set", "DB_PASS", "--from-secret", "db", "--secret"},
			reply: varMasked,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/me/env/DB_PASS", Body: `{"from_secret":"db","secret":true}`},
		},
		{
			name: "SetValueAndFromSecret", args: []string{"env", "set", "X", "v", "--from-secret", "db"},
			errOut: "envlet: USAGE: env set: give one of VALUE, --value-stdin or --from-secret\n", code: 2,
		},
		{
			name: "SetNoValue", args: []string{"env", "set", "X"},
			errOut: "envlet: USAGE: env set: missing VALUE (or --value-stdin, --from-secret)\n", code: 2,
		},
		{
			name: "SetEscapesPath", args: []string{"env", "set", "--user", "a b/c", "X", "v"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/a%20b%2Fc/env/X", Body: `{"value":"v"}`},
		},
		{
			name: "SetHTMLCharsUnescaped", args: []string{"env", "set", "X", "<a&b>"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/users/me/env/X", Body: `{"value":"<a&b>"}`},
		},
		{
			name: "Get", args: []string{"env", "get", "FOO"},
			reply: varFoo,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/env/FOO"},
			out:   "bar\n",
		},
		{
			name: "GetRevealAfter", args: []string{"env", "get", "FOO", "--reveal", "--user", "bob"},
			reply: varFoo,
			want:  stubRequest{Method: "GET", Path: "/v1/users/bob/env/FOO", Query: "reveal=1"},
			out:   "bar\n",
		},
		{
			name: "GetMultilineExact", args: []string{"env", "get", "PEM"},
			reply: `{"name":"PEM","value":"a\nb\tc","secret":false,"masked":false}`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/env/PEM"},
			out:   "a\nb\tc\n",
		},
		{
			name: "GetMasked", args: []string{"env", "get", "API_TOKEN"},
			reply:  varMasked,
			want:   stubRequest{Method: "GET", Path: "/v1/users/me/env/API_TOKEN"},
			out:    "********\n",
			errOut: "envlet: note: API_TOKEN is masked; add --reveal to print its value\n",
		},
		{
			name: "GetMaskedRevealRefused", args: []string{"env", "get", "--reveal", "API_TOKEN"},
			reply:  varMasked,
			want:   stubRequest{Method: "GET", Path: "/v1/users/me/env/API_TOKEN", Query: "reveal=1"},
			out:    "********\n",
			errOut: "envlet: note: API_TOKEN is masked; the agent did not allow --reveal\n",
		},
		{
			name: "GetMissingIsEmpty", args: []string{"env", "get", "NOPE"},
			status: 404, reply: apiErr("ENV_VAR_NOT_FOUND", "variable NOPE not found"),
			want: stubRequest{Method: "GET", Path: "/v1/users/me/env/NOPE"},
		},
		{
			name: "GetMissingJSONIsEmpty", args: []string{"env", "get", "--json", "NOPE"},
			status: 404, reply: apiErr("ENV_VAR_NOT_FOUND", "variable NOPE not found"),
			want: stubRequest{Method: "GET", Path: "/v1/users/me/env/NOPE"},
		},
		{
			name: "GetOtherNotFoundFails", args: []string{"env", "get", "--user", "ghost", "X"},
			status: 404, reply: apiErr("NOT_FOUND", "user ghost not found"),
			want:   stubRequest{Method: "GET", Path: "/v1/users/ghost/env/X"},
			errOut: "envlet: NOT_FOUND: user ghost not found\n", code: 1,
		},
		{
			name: "GetPermissionDenied", args: []string{"env", "get", "--user", "bob", "X"},
			status: 403, reply: apiErr("PERMISSION_DENIED", "alice may not read bob's variables"),
			want:   stubRequest{Method: "GET", Path: "/v1/users/bob/env/X"},
			errOut: "envlet: PERMISSION_DENIED: alice may not read bob's variables\n", code: 1,
		},
		{
			name: "GetJSON", args: []string{"env", "get", "FOO", "--json"},
			reply: varFoo,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/env/FOO"},
			out:   "{\n  \"name\": \"FOO\",\n  \"value\": \"bar\",\n  \"secret\": false,\n  \"masked\": false\n}\n",
		},
		{
			name: "GetEmptyName", args: []string{"env", "get", ""},
			errOut: "envlet: USAGE: NAME must not be empty\n", code: 2,
		},
		{
			name: "GetDotDot", args: []string{"env", "get", ".."},
			errOut: "envlet: USAGE: NAME must not be \"..\"\n", code: 2,
		},
		{
			name: "GetEmptyUser", args: []string{"env", "get", "--user=", "X"},
			errOut: "envlet: USAGE: --user must not be empty\n", code: 2,
		},
		{
			name: "GetNoName", args: []string{"env", "get"},
			errOut: "envlet: USAGE: env get: got 0 argument(s), want NAME\n", code: 2,
		},
		{
			name: "GetUnknownFlag", args: []string{"env", "get", "--revael", "X"},
			errOut: "envlet: USAGE: env get: unknown flag: --revael\n", code: 2,
		},
		{
			name: "List", args: []string{"env", "list"},
			reply: "[" + `{"name":"API_TOKEN","value":"********","secret":false,"masked":true},` +
				`{"name":"LR","value":"0.1","secret":false,"masked":false},` +
				`{"name":"ML","value":"a\nb","secret":false,"masked":false}` + "]",
			want: stubRequest{Method: "GET", Path: "/v1/users/me/env"},
			out:  "API_TOKEN=********\nLR=0.1\nML=\"a\\nb\"\n",
		},
		{
			name: "ListEmpty", args: []string{"env", "list", "--user", "bob"},
			reply: "[]",
			want:  stubRequest{Method: "GET", Path: "/v1/users/bob/env"},
		},
		{
			name: "ListRevealJSON", args: []string{"env", "list", "--reveal", "--json"},
			reply: "[" + varFoo + "]",
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/env", Query: "reveal=1"},
			out:   "[\n  {\n    \"name\": \"FOO\",\n    \"value\": \"bar\",\n    \"secret\": false,\n    \"masked\": false\n  }\n]\n",
		},
		{
			name: "ListJSONKeepsUnknownFields", args: []string{"env", "list", "--json"},
			reply: `[{"name":"A","value":"1","secret":false,"masked":false,"updated":"2026-01-01"}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/env"},
			out:   "[\n  {\n    \"name\": \"A\",\n    \"value\": \"1\",\n    \"secret\": false,\n    \"masked\": false,\n    \"updated\": \"2026-01-01\"\n  }\n]\n",
		},
		{
			name: "ListTakesNoArgs", args: []string{"env", "list", "X"},
			errOut: "envlet: USAGE: env list: got 1 argument(s), want no arguments\n", code: 2,
		},
		{
			name: "Update", args: []string{"env", "update", "FOO", "baz", "--secret"},
			reply: varFoo,
			want:  stubRequest{Method: "PATCH", Path: "/v1/users/me/env/FOO", Body: `{"value":"baz","secret":true}`},
		},
		{
			name: "UpdateMissing", args: []string{"env", "update", "NOPE", "v"},
			status: 404, reply: apiErr("ENV_VAR_NOT_FOUND", "variable NOPE not found"),
			want:   stubRequest{Method: "PATCH", Path: "/v1/users/me/env/NOPE", Body: `{"value":"v"}`},
			errOut: "envlet: ENV_VAR_NOT_FOUND: variable NOPE not found\n", code: 1,
		},
		{
			name: "Delete", args: []string{"env", "delete", "FOO"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/users/me/env/FOO"},
		},
		{
			name: "DeleteMissing", args: []string{"env", "delete", "--user", "alice", "NOPE"},
			status: 404, reply: apiErr("ENV_VAR_NOT_FOUND", "variable NOPE not found"),
			want:   stubRequest{Method: "DELETE", Path: "/v1/users/alice/env/NOPE"},
			errOut: "envlet: ENV_VAR_NOT_FOUND: variable NOPE not found\n", code: 1,
		},
		{
			name: "DeleteAll", args: []string{"env", "delete-all", "--user", "alice"},
			reply: `{"deleted":3}`,
			want:  stubRequest{Method: "DELETE", Path: "/v1/users/alice/env"},
			out:   "deleted 3 variables\n",
		},
		{
			name: "GroupWithoutCommand", args: []string{"env"},
			errOut: "envlet: USAGE: env: missing command, one of: create, delete, delete-all, get, list, set, update\n", code: 2,
		},
		{
			name: "GroupUnknownCommand", args: []string{"env", "sett", "X", "v"},
			errOut: "envlet: USAGE: env: unknown command \"sett\"; did you mean get or set? (one of: create, delete, delete-all, get, list, set, update)\n", code: 2,
		},
	})
}

func TestValueStdin(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "SetStripsOneNewline", args: []string{"env", "set", "--value-stdin", "TOKEN"},
			stdin: "s3cr3t\n", reply: varMasked,
			want: stubRequest{Method: "PUT", Path: "/v1/users/me/env/TOKEN", Body: `{"value":"s3cr3t"}`},
		},
		{
			name: "SetOnlyOneNewline", args: []string{"env", "set", "TOKEN", "--value-stdin"},
			stdin: "a\n\n", reply: varMasked,
			want: stubRequest{Method: "PUT", Path: "/v1/users/me/env/TOKEN", Body: `{"value":"a\n"}`},
		},
		{
			name: "CreateNoNewline", args: []string{"env", "create", "--value-stdin", "--secret", "K"},
			stdin: "-dash value", status: 201, reply: varMasked,
			want: stubRequest{Method: "POST", Path: "/v1/users/me/env/K", Body: `{"value":"-dash value","secret":true}`},
		},
		{
			name: "Update", args: []string{"env", "update", "K", "--value-stdin"},
			stdin: "multi\nline\n", reply: varMasked,
			want: stubRequest{Method: "PATCH", Path: "/v1/users/me/env/K", Body: `{"value":"multi\nline"}`},
		},
		{
			name: "ProjectEnvSet", args: []string{"project", "env", "set", "--value-stdin", "fraud", "DB_PASSWORD"},
			stdin: "pw\n", reply: varMasked,
			want: stubRequest{Method: "PUT", Path: "/v1/projects/fraud/env/DB_PASSWORD", Body: `{"value":"pw"}`},
		},
		{
			name: "WithValueArg", args: []string{"env", "set", "--value-stdin", "K", "v"},
			stdin:  "x\n",
			errOut: "envlet: USAGE: env set: give VALUE or --value-stdin, not both\n", code: 2,
		},
		{
			name: "WithFromSecret", args: []string{"env", "set", "--value-stdin", "K", "--from-secret", "s"},
			stdin:  "x\n",
			errOut: "envlet: USAGE: env set: give one of VALUE, --value-stdin or --from-secret\n", code: 2,
		},
	})
}

func TestProject(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "Create", args: []string{"project", "create", "fraud"},
			status: 201, reply: project1,
			want: stubRequest{Method: "POST", Path: "/v1/projects", Body: `{"name":"fraud"}`},
		},
		{
			name: "CreateExists", args: []string{"project", "create", "fraud"},
			status: 409, reply: apiErr("ALREADY_EXISTS", "project fraud already exists"),
			want:   stubRequest{Method: "POST", Path: "/v1/projects", Body: `{"name":"fraud"}`},
			errOut: "envlet: ALREADY_EXISTS: project fraud already exists\n", code: 1,
		},
		{
			name: "CreateEmpty", args: []string{"project", "create", ""},
			errOut: "envlet: USAGE: project must not be empty\n", code: 2,
		},
		{
			name: "List", args: []string{"project", "list"},
			reply: "[" + project1 + `,{"name":"ml","owners":["carol"],"members":["carol"],"groups":["base","gpu"],"created_at":"2026-12-01T10:00:00Z"}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/projects"},
			// fraud predates dated records: no date, not a made-up one.
			out: "NAME   OWNERS  MEMBERS    GROUPS    CREATED\n" +
				"fraud  alice   alice,bob  -         -\n" +
				"ml     carol   carol      base,gpu  2026-12-01T10:00:00Z\n",
		},
		{
			name: "ListJSON", args: []string{"project", "list", "--json"},
			reply: `[{"name":"fraud","owners":[],"members":[],"groups":[]}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/projects"},
			out:   "[\n  {\n    \"name\": \"fraud\",\n    \"owners\": [],\n    \"members\": [],\n    \"groups\": []\n  }\n]\n",
		},
		{
			name: "Show", args: []string{"project", "show", "fraud"},
			reply: project1,
			want:  stubRequest{Method: "GET", Path: "/v1/projects/fraud"},
			out:   "name:     fraud\nowners:   alice\nmembers:  alice,bob\ngroups:   -\ncreated:  -\nupdated:  -\n",
		},
		{
			name: "ShowJSON", args: []string{"project", "show", "--json", "fraud"},
			reply: `{"name":"fraud"}`,
			want:  stubRequest{Method: "GET", Path: "/v1/projects/fraud"},
			out:   "{\n  \"name\": \"fraud\"\n}\n",
		},
		{
			name: "ShowMissing", args: []string{"project", "show", "nope"},
			status: 404, reply: apiErr("PROJECT_NOT_FOUND", "project nope not found"),
			want:   stubRequest{Method: "GET", Path: "/v1/projects/nope"},
			errOut: "envlet: PROJECT_NOT_FOUND: project nope not found\n", code: 1,
		},
		{
			name: "Delete", args: []string{"project", "delete", "fraud"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/projects/fraud"},
		},
		{
			name: "AddMember", args: []string{"project", "add-member", "fraud", "bob"},
			reply: project1,
			want:  stubRequest{Method: "POST", Path: "/v1/projects/fraud/members", Body: `{"user":"bob"}`},
		},
		{
			name: "AddOwnerFlagFirst", args: []string{"project", "add-member", "--owner", "fraud", "bob"},
			reply: project1,
			want:  stubRequest{Method: "POST", Path: "/v1/projects/fraud/members", Body: `{"user":"bob","owner":true}`},
		},
		{
			name: "AddOwnerFlagLast", args: []string{"project", "add-member", "fraud", "bob", "--owner"},
			reply: project1,
			want:  stubRequest{Method: "POST", Path: "/v1/projects/fraud/members", Body: `{"user":"bob","owner":true}`},
		},
		{
			name: "AddMemberDenied", args: []string{"project", "add-member", "fraud", "bob"},
			status: 403, reply: apiErr("PERMISSION_DENIED", "only owners of fraud may add members"),
			want:   stubRequest{Method: "POST", Path: "/v1/projects/fraud/members", Body: `{"user":"bob"}`},
			errOut: "envlet: PERMISSION_DENIED: only owners of fraud may add members\n", code: 1,
		},
		{
			name: "AddMemberOneArg", args: []string{"project", "add-member", "fraud"},
			errOut: "envlet: USAGE: project add-member: got 1 argument(s), want P USER\n", code: 2,
		},
		{
			name: "RemoveMember", args: []string{"project", "remove-member", "fraud", "bob"},
			reply: project1,
			want:  stubRequest{Method: "DELETE", Path: "/v1/projects/fraud/members/bob"},
		},
		{
			name: "EnvSet", args: []string{"project", "env", "set", "fraud", "LR", "0.1"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/projects/fraud/env/LR", Body: `{"value":"0.1"}`},
		},
		{
			name: "EnvSetSecretLast", args: []string{"project", "env", "set", "fraud", "DB", "--", "-x", "--secret"},
			reply: varFoo,
			// after "--" even "--secret" is a positional: too many arguments
			errOut: "envlet: USAGE: project env set: got 4 argument(s), want P NAME (VALUE | --from-secret SECRET | --value-stdin)\n", code: 2,
		},
		{
			name: "EnvSetSecret", args: []string{"project", "env", "set", "--secret", "fraud", "DB", "--", "-x"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/projects/fraud/env/DB", Body: `{"value":"-x","secret":true}`},
		},
		{
			name: "EnvList", args: []string{"project", "env", "list", "fraud"},
			reply: `[{"name":"FOO","value":"bar","secret":false,"masked":false,"source":"project"},` +
				`{"name":"FOO","value":"g2","secret":false,"masked":false,"source":"group:two"},` +
				`{"name":"API_TOKEN","value":"********","secret":false,"masked":true,"source":"group:one"}]`,
			want: stubRequest{Method: "GET", Path: "/v1/projects/fraud/env", Query: "groups=1"},
			out:  "FOO=bar\n# group:two (read-only)\nFOO=g2\n# group:one (read-only)\nAPI_TOKEN=********\n",
		},
		{
			name: "Leave", args: []string{"project", "leave", "fraud"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/projects/fraud/members/me"},
		},
		{
			name: "EnvListOwn", args: []string{"project", "env", "list", "fraud", "--own"},
			reply: "[" + varFoo + "," + varMasked + "]",
			want:  stubRequest{Method: "GET", Path: "/v1/projects/fraud/env"},
			out:   "FOO=bar\nAPI_TOKEN=********\n",
		},
		{
			name: "EnvListRevealJSON", args: []string{"project", "env", "list", "fraud", "--own", "--reveal", "--json"},
			reply: "[]",
			want:  stubRequest{Method: "GET", Path: "/v1/projects/fraud/env", Query: "reveal=1"},
			out:   "[]\n",
		},
		{
			name: "EnvDelete", args: []string{"project", "env", "delete", "fraud", "LR"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/projects/fraud/env/LR"},
		},
		{
			name: "EnvDeleteMissing", args: []string{"project", "env", "delete", "fraud", "LR"},
			status: 404, reply: apiErr("ENV_VAR_NOT_FOUND", "variable LR not found"),
			want:   stubRequest{Method: "DELETE", Path: "/v1/projects/fraud/env/LR"},
			errOut: "envlet: ENV_VAR_NOT_FOUND: variable LR not found\n", code: 1,
		},
		{
			name: "Groups", args: []string{"project", "groups", "fraud", "base", "gpu"},
			reply: project1,
			want:  stubRequest{Method: "PUT", Path: "/v1/projects/fraud/groups", Body: `{"groups":["base","gpu"]}`},
		},
		{
			name: "GroupsClear", args: []string{"project", "groups", "fraud"},
			reply: project1,
			want:  stubRequest{Method: "PUT", Path: "/v1/projects/fraud/groups", Body: `{"groups":[]}`},
		},
		{
			name: "EnvGroupWithoutCommand", args: []string{"project", "env"},
			errOut: "envlet: USAGE: project env: missing command, one of: delete, list, set\n", code: 2,
		},
	})
}

func TestWorkload(t *testing.T) {
	dir := shortTempDir(t)
	doc := `{"id":"train-42","user":"alice","project":"fraud","match":{"uid":1001,"token":true},"runtime":{"LR":"0.1"}}` + "\n"
	file := filepath.Join(dir, "w.json")
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(`{"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	runCases(t, []cliCase{
		{
			name: "RegisterFile", args: []string{"workload", "register", file},
			status: 201, reply: `{"id":"train-42","token_file":"/run/envlet/tokens/train-42"}`,
			want: stubRequest{Method: "POST", Path: "/v1/workloads", Body: doc},
			out:  "registered train-42\ntoken file: /run/envlet/tokens/train-42\n",
		},
		{
			name: "RegisterStdin", args: []string{"workload", "register", "-"},
			stdin: doc, status: 201, reply: `{"id":"train-42"}`,
			want: stubRequest{Method: "POST", Path: "/v1/workloads", Body: doc},
			out:  "registered train-42\n",
		},
		{
			name: "RegisterExists", args: []string{"workload", "register", file},
			status: 409, reply: apiErr("ALREADY_EXISTS", "workload train-42 already exists"),
			want:   stubRequest{Method: "POST", Path: "/v1/workloads", Body: doc},
			errOut: "envlet: ALREADY_EXISTS: workload train-42 already exists\n", code: 1,
		},
		{
			name: "RegisterNotJSON", args: []string{"workload", "register", bad},
			errOut: "envlet: INVALID_REQUEST: workload file " + bad + " is not valid JSON\n", code: 1,
		},
		{
			name: "RegisterNoFile", args: []string{"workload", "register", filepath.Join(dir, "nope.json")},
			errOut: "envlet: IO_ERROR: read workload file: open " + filepath.Join(dir, "nope.json") + ": no such file or directory\n", code: 1,
		},
		{
			name: "List", args: []string{"workload", "list"},
			reply: `[{"id":"train-42","user":"alice","project":"fraud","match":{"uid":1001},"mount":false,"source":"api","token_file":"/run/envlet/tokens/train-42","revision":17,"stale":false},` +
				`{"id":"web","user":"bob","project":"shop","match":{"systemd_unit":"/system.slice/web.service"},"mount":true,"source":"file","revision":16,"stale":true}]`,
			want: stubRequest{Method: "GET", Path: "/v1/workloads"},
			out: "ID        USER   PROJECT  SOURCE  REVISION  STALE  TOKEN_FILE\n" +
				"train-42  alice  fraud    api     17        false  /run/envlet/tokens/train-42\n" +
				"web       bob    shop     file    16        true   -\n",
		},
		{
			name: "ListJSON", args: []string{"workload", "list", "--json"},
			reply: `[{"id":"w","revision":1,"stale":false}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/workloads"},
			out:   "[\n  {\n    \"id\": \"w\",\n    \"revision\": 1,\n    \"stale\": false\n  }\n]\n",
		},
		{
			name: "Delete", args: []string{"workload", "delete", "train-42"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/workloads/train-42"},
		},
		{
			name: "DeleteMissing", args: []string{"workload", "delete", "nope"},
			status: 404, reply: apiErr("WORKLOAD_NOT_FOUND", "workload nope not found"),
			want:   stubRequest{Method: "DELETE", Path: "/v1/workloads/nope"},
			errOut: "envlet: WORKLOAD_NOT_FOUND: workload nope not found\n", code: 1,
		},
	})
}

func TestExplain(t *testing.T) {
	reply := `[{"name":"API_TOKEN","value":"********","masked":true,"layer":"account","overrides":["project","group:base"]},` +
		`{"name":"LR","value":"0.1","masked":false,"layer":"runtime","overrides":[]},` +
		`{"name":"WANDB_MODE","value":"","masked":false,"layer":"runtime","overrides":["platform"],"cleared":true}]`
	table := "NAME        VALUE      LAYER    OVERRIDES\n" +
		"API_TOKEN   ********   account  project,group:base\n" +
		"LR          0.1        runtime  -\n" +
		"WANDB_MODE  (cleared)  runtime  platform\n"
	runCases(t, []cliCase{
		{
			name: "Workload", args: []string{"explain", "--workload", "train-42"},
			reply: reply,
			want:  stubRequest{Method: "GET", Path: "/v1/explain", Query: "workload=train-42"},
			out:   table,
		},
		{
			name: "UserProjectReveal", args: []string{"explain", "--user", "alice", "--project", "fraud", "--reveal"},
			reply: reply,
			want:  stubRequest{Method: "GET", Path: "/v1/explain", Query: "project=fraud&reveal=1&user=alice"},
			out:   table,
		},
		{
			name: "SecretScopeAndLeftOut", args: []string{"explain", "--workload", "w"},
			reply: `[{"name":"STOLEN","value":"","layer":"project","overrides":[],"left_out":"from_secret P: no secret of project p"},` +
				`{"name":"TOKEN","value":"********","masked":true,"layer":"account","overrides":[],"secret_scope":"secret:user:alice"}]`,
			want: stubRequest{Method: "GET", Path: "/v1/explain", Query: "workload=w"},
			out: "NAME    VALUE                                              LAYER    OVERRIDES\n" +
				"STOLEN  (left out: from_secret P: no secret of project p)  project  -\n" +
				"TOKEN   ******** (secret:user:alice)                       account  -\n",
		},
		{
			name: "QueryEscaped", args: []string{"explain", "--workload", "a&b=c d"},
			reply: "[]",
			want:  stubRequest{Method: "GET", Path: "/v1/explain", Query: "workload=a%26b%3Dc+d"},
			out:   "NAME  VALUE  LAYER  OVERRIDES\n",
		},
		{
			name: "JSON", args: []string{"explain", "--json", "--workload", "w"},
			reply: `[{"name":"X","value":"","masked":false,"layer":"runtime","overrides":["platform"],"cleared":true}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/explain", Query: "workload=w"},
			out:   "[\n  {\n    \"name\": \"X\",\n    \"value\": \"\",\n    \"masked\": false,\n    \"layer\": \"runtime\",\n    \"overrides\": [\n      \"platform\"\n    ],\n    \"cleared\": true\n  }\n]\n",
		},
		{
			name: "Both", args: []string{"explain", "--workload", "w", "--user", "alice"},
			errOut: "envlet: USAGE: explain: give --workload, or --user and --project, not both\n", code: 2,
		},
		{
			name: "Preview", args: []string{"explain", "--project", "fraud", "-e", "A=1", "-e", "B=", "--json"},
			reply: "[]",
			want:  stubRequest{Method: "POST", Path: "/v1/explain", Body: `{"project":"fraud","execution":{"A":"1","B":""}}`},
			out:   "[]\n",
		},
		{
			name: "PreviewBadE", args: []string{"explain", "--project", "fraud", "-e", "secretvalue"},
			errOut: "envlet: USAGE: explain: -e number 1 is not NAME=VALUE\n", code: 2,
		},
		{
			name: "PreviewNotWorkload", args: []string{"explain", "--workload", "w", "-e", "A=1"},
			errOut: "envlet: USAGE: explain: -e previews a new workload: give it with --project P, not --workload\n", code: 2,
		},
		{
			name: "Neither", args: []string{"explain"},
			errOut: "envlet: USAGE: explain: give --workload ID, or --project P (and --user U)\n", code: 2,
		},
		{
			name: "UserOnly", args: []string{"explain", "--user", "alice"},
			errOut: "envlet: USAGE: explain: give --workload ID, or --project P (and --user U)\n", code: 2,
		},
		{
			name: "WorkloadNotFound", args: []string{"explain", "--workload", "nope"},
			status: 404, reply: apiErr("WORKLOAD_NOT_FOUND", "workload nope not found"),
			want:   stubRequest{Method: "GET", Path: "/v1/explain", Query: "workload=nope"},
			errOut: "envlet: WORKLOAD_NOT_FOUND: workload nope not found\n", code: 1,
		},
	})
}

func TestStatusWhoami(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "Status", args: []string{"status"},
			reply: `{"workloads":2,"backend":"local","revision":17,"stale_seconds":0,"users":3,"projects":1,"variables":9,"etcd_members":null}`,
			want:  stubRequest{Method: "GET", Path: "/v1/status"},
			out:   "backend: local\nrevision: 17\nstale_seconds: 0\nusers: 3\nprojects: 1\nvariables: 9\nworkloads: 2\netcd_members: null\n",
		},
		{
			name: "StatusJSON", args: []string{"status", "--json"},
			reply: `{"backend":"etcd","revision":17}`,
			want:  stubRequest{Method: "GET", Path: "/v1/status"},
			out:   "{\n  \"backend\": \"etcd\",\n  \"revision\": 17\n}\n",
		},
		{
			name: "StatusBackendDown", args: []string{"status"},
			status: 503, reply: apiErr("BACKEND_UNAVAILABLE", "etcd: context deadline exceeded"),
			want:   stubRequest{Method: "GET", Path: "/v1/status"},
			errOut: "envlet: BACKEND_UNAVAILABLE: etcd: context deadline exceeded\n", code: 1,
		},
		{
			name: "Whoami", args: []string{"whoami"},
			reply: `{"admin":true,"uid":1001,"user":"alice"}`,
			want:  stubRequest{Method: "GET", Path: "/v1/whoami"},
			out:   "user: alice\nuid: 1001\nadmin: true\n",
		},
		{
			name: "WhoamiJSON", args: []string{"whoami", "--json"},
			reply: `{"user":"alice","uid":1001,"admin":false}`,
			want:  stubRequest{Method: "GET", Path: "/v1/whoami"},
			out:   "{\n  \"user\": \"alice\",\n  \"uid\": 1001,\n  \"admin\": false\n}\n",
		},
	})
}

func TestReplyErrors(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "ErrorWithoutBody", args: []string{"status"},
			status: 502, reply: "<html>bad gateway</html>",
			want:   stubRequest{Method: "GET", Path: "/v1/status"},
			errOut: "envlet: BAD_REPLY: GET /v1/status: HTTP 502 Bad Gateway without an error body\n", code: 1,
		},
		{
			name: "Redirect", args: []string{"env", "delete", "X"},
			status: 301, reply: "",
			want:   stubRequest{Method: "DELETE", Path: "/v1/users/me/env/X"},
			errOut: "envlet: BAD_REPLY: DELETE /v1/users/me/env/X: HTTP 301 Moved Permanently without an error body\n", code: 1,
		},
		{
			name: "Internal", args: []string{"env", "list"},
			status: 500, reply: apiErr("INTERNAL", "state file: input/output error"),
			want:   stubRequest{Method: "GET", Path: "/v1/users/me/env"},
			errOut: "envlet: INTERNAL: state file: input/output error\n", code: 1,
		},
		{
			name: "NotJSON", args: []string{"env", "list"},
			reply:  "[{",
			want:   stubRequest{Method: "GET", Path: "/v1/users/me/env"},
			errOut: "envlet: BAD_REPLY: decode reply to GET /v1/users/me/env: invalid JSON at offset 2\n", code: 1,
		},
		{
			name: "WrongShape", args: []string{"env", "list"},
			reply:  `{"name":"X"}`,
			want:   stubRequest{Method: "GET", Path: "/v1/users/me/env"},
			errOut: "envlet: BAD_REPLY: decode reply to GET /v1/users/me/env: reply is not a []api.Variable\n", code: 1,
		},
	})
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"env", "set", "--help"}, {"help", "project"}} {
		out, errOut, code := runCLI(t, "", args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q, stdout %q", args, code, errOut, out)
		}
	}
	out, _, _ := runCLI(t, "", "env", "--help")
	if strings.Contains(out, "envlet env [flags]") {
		t.Errorf("group help offers to run the group:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		errOut string
	}{
		{nil, "envlet: USAGE: missing command, one of: audit, completion, env, explain, group, project, run, secret, status, ui, whoami, workload\n"},
		{[]string{"evn"}, "envlet: USAGE: unknown command \"evn\"; did you mean env or run? (one of: audit, completion, env, explain, group, project, run, secret, status, ui, whoami, workload)\n"},
		{[]string{"completion", "nushell"}, "envlet: USAGE: completion: unknown command \"nushell\" (one of: bash, fish, powershell, zsh)\n"},
		{[]string{"--nope"}, "envlet: USAGE: unknown flag: --nope\n"},
		{[]string{"status", "--socket"}, "envlet: USAGE: status: flag needs an argument: --socket\n"},
	} {
		out, errOut, code := runCLI(t, "", tt.args...)
		if out != "" || errOut != tt.errOut || code != 2 {
			t.Errorf("%q: exit %d, stdout %q, stderr\n%q\nwant\n%q", tt.args, code, out, errOut, tt.errOut)
		}
	}
}
