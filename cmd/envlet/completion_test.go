package main

import (
	"strings"
	"testing"
)

// Completion asks the agent for names only: the candidates are the names
// of the reply, never its values, and the request never asks for a reveal.
func TestCompletionNamesNotValues(t *testing.T) {
	const canary = "canary-value-5b1e"
	for _, tt := range []struct {
		name  string
		args  []string
		reply string
		path  string
		want  []string
	}{
		{"AccountVars", []string{"env", "get", ""},
			`[{"name":"API_TOKEN","value":"` + canary + `","secret":false,"masked":false},{"name":"APP","value":"` + canary + `"}]`,
			"/v1/users/me/env", []string{"API_TOKEN", "APP"}},
		{"OtherUser", []string{"env", "delete", "--user", "alice", "A"},
			`[{"name":"API_TOKEN","value":"` + canary + `"},{"name":"APP","value":"x"},{"name":"B","value":"y"}]`,
			"/v1/users/alice/env", []string{"API_TOKEN", "APP"}},
		{"ProjectVars", []string{"project", "env", "delete", "fraud", ""},
			`[{"name":"DB_URL","value":"` + canary + `"}]`, "/v1/projects/fraud/env", []string{"DB_URL"}},
		{"GroupVars", []string{"group", "unset", "base", ""},
			`{"name":"base","variables":[{"name":"REGION","value":"` + canary + `"}]}`, "/v1/groups/base", []string{"REGION"}},
		{"ProjectSecrets", []string{"secret", "get", "--project", "fraud", ""},
			`[{"name":"db_password","kind":"text","size":9,"value":"` + canary + `"}]`, "/v1/projects/fraud/secrets", []string{"db_password"}},
		{"Workloads", []string{"workload", "delete", ""},
			`[{"id":"web-1","user":"alice","project":"fraud","token_file":"` + canary + `"}]`, "/v1/workloads", []string{"web-1"}},
		{"NameWithNewlineDropped", []string{"project", "show", ""},
			`[{"name":"ok"},{"name":"bad\nname"}]`, "/v1/projects", []string{"ok"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startStub(t, 200, tt.reply)
			out, errOut, code := runCLI(t, "", append([]string{"--socket", s.socket, "__complete"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if strings.Contains(out+errOut, canary) {
				t.Fatalf("completion printed a value:\n%s%s", out, errOut)
			}
			reqs := s.requests()
			if len(reqs) != 1 || reqs[0].Method != "GET" || reqs[0].Path != tt.path || reqs[0].Query != "" {
				t.Errorf("requests %+v, want one GET %s without a query", reqs, tt.path)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			got, directive := lines[:len(lines)-1], lines[len(lines)-1]
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("candidates %q, want %q", got, tt.want)
			}
			if directive != ":4" { // ShellCompDirectiveNoFileComp
				t.Errorf("directive %q, want :4", directive)
			}
		})
	}
}
