package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

const platformDefaults = `PATH = /usr/bin:/bin
LANG = C.UTF-8
PLATFORM_ONLY = p
SHARED = platform
PROJECT_ID = platform-proj
CLEAR_ME = platform
SPACED = "  kept  "`

// setupLayers puts a variable named for its layer in every layer, and one
// name (SHARED) in all of them.
func setupLayers(t *testing.T) *agentProc {
	a := startAgent(t, platformDefaults)
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", "alice")
	a.cli("project", "env", "set", "fraud", "SHARED", "project")
	a.cli("project", "env", "set", "fraud", "PROJ_ONLY", "pv")
	a.cli("project", "env", "set", "fraud", "ACCT_OVER", "project")
	a.cli("env", "set", "--user", "alice", "SHARED", "account")
	a.cli("env", "set", "--user", "alice", "ACCT_ONLY", "a")
	a.cli("env", "set", "--user", "alice", "ACCT_OVER", "account")
	a.cli("env", "set", "--user", "bob", "BOB_ONLY", "b")
	a.register(map[string]any{
		"id": "w1", "user": "alice", "project": "fraud", "match": map[string]any{"uid": a.uid("w1")},
		"runtime": map[string]string{
			"SHARED": "runtime", "RT_ONLY": "r", "CLEAR_ME": "", "EXEC_OVER": "runtime",
			"PROJECT_ID": "evil", // reserved: only the platform layer may set it
		},
		"execution": map[string]string{"EXEC_OVER": "exec", "EXEC_ONLY": "e", "ENVLET_SOCKET": "/evil"},
	})
	a.register(map[string]any{"id": "w2", "user": "bob", "project": "fraud", "match": map[string]any{"uid": a.uid("w2")}})
	return a
}

func TestPrecedence(t *testing.T) {
	a := setupLayers(t)
	env, r := a.launchEnv(a.uid("w1"), a.uid("w1"), "IMAGE_ONLY=i", "LANG=en_US.UTF-8", "CLEAR_ME=image", "ENVLET_EXTRA=1")
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	for _, tt := range []struct {
		name, want string // want "" means absent
	}{
		{"SHARED", "runtime"},           // runtime beats account, project, platform
		{"EXEC_OVER", "exec"},           // execution beats runtime
		{"EXEC_ONLY", "e"},              //
		{"RT_ONLY", "r"},                //
		{"ACCT_ONLY", "a"},              // alice is a member: her account layer counts
		{"ACCT_OVER", "account"},        // account beats project
		{"PROJ_ONLY", "pv"},             //
		{"PLATFORM_ONLY", "p"},          //
		{"SPACED", "  kept  "},          // quoted default keeps its spaces
		{"LANG", "C.UTF-8"},             // platform defaults beat the image's env
		{"IMAGE_ONLY", "i"},             // the launcher's own env is the floor
		{"CLEAR_ME", ""},                // an empty runtime value clears platform and image
		{"PROJECT_ID", "platform-proj"}, // reserved: the runtime layer's value is ignored
		{"ENVLET_EXTRA", ""},            // ENVLET_* control variables are stripped
		{"ENVLET_SOCKET", ""},           // and never set from a workload layer
		{"BOB_ONLY", ""},                // another user's account
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := env[tt.name]
			switch {
			case tt.want == "" && ok:
				t.Errorf("%s = %q, want it absent", tt.name, got)
			case tt.want != "" && got != tt.want:
				t.Errorf("%s = %q (present %v), want %q", tt.name, got, ok, tt.want)
			}
		})
	}
	a.waitLog("name=PROJECT_ID", 1) // the ignored reserved name is logged by name
	if strings.Contains(a.log.String(), "evil") {
		t.Error("the ignored reserved value reached the agent log")
	}
}

func TestMembershipRule(t *testing.T) {
	a := setupLayers(t)
	env, r := a.launchEnv(a.uid("w2"), a.uid("w2"))
	if r.code != 0 {
		t.Fatalf("launch: %s", r)
	}
	if _, ok := env["BOB_ONLY"]; ok {
		t.Fatal("bob is not a member of fraud, yet his account variable was served")
	}
	a.cli("project", "add-member", "fraud", "bob")
	env, _ = a.launchEnv(a.uid("w2"), a.uid("w2"))
	if env["BOB_ONLY"] != "b" {
		t.Fatalf("after add-member, BOB_ONLY = %q, want b", env["BOB_ONLY"])
	}
	a.cli("project", "remove-member", "fraud", "bob")
	env, _ = a.launchEnv(a.uid("w2"), a.uid("w2"))
	if _, ok := env["BOB_ONLY"]; ok {
		t.Fatal("after remove-member, bob's account variable is still served")
	}
	// An owner is a member too.
	a.cli("project", "add-member", "--owner", "fraud", "bob")
	env, _ = a.launchEnv(a.uid("w2"), a.uid("w2"))
	if env["BOB_ONLY"] != "b" {
		t.Fatalf("bob as owner: BOB_ONLY = %q, want b", env["BOB_ONLY"])
	}
}

func TestChangeReachesNextLaunch(t *testing.T) {
	a := setupLayers(t)
	a.cli("project", "env", "set", "fraud", "PROJ_ONLY", "v2")
	a.cli("env", "set", "--user", "alice", "ACCT_ONLY", "a2")
	env, r := a.launchEnv(a.uid("w1"), a.uid("w1"))
	if r.code != 0 {
		t.Fatal(r)
	}
	if env["PROJ_ONLY"] != "v2" || env["ACCT_ONLY"] != "a2" {
		t.Fatalf("PROJ_ONLY=%q ACCT_ONLY=%q, want v2 a2", env["PROJ_ONLY"], env["ACCT_ONLY"])
	}
	a.cli("env", "delete", "--user", "alice", "ACCT_ONLY")
	env, _ = a.launchEnv(a.uid("w1"), a.uid("w1"))
	if _, ok := env["ACCT_ONLY"]; ok {
		t.Fatal("a deleted account variable is still served")
	}
}

type explained struct {
	Name      string   `json:"name"`
	Value     string   `json:"value"`
	Masked    bool     `json:"masked"`
	Cleared   bool     `json:"cleared"`
	Layer     string   `json:"layer"`
	Overrides []string `json:"overrides"`
}

func TestExplain(t *testing.T) {
	a := setupLayers(t)
	a.cli("env", "set", "--user", "alice", "HF_TOKEN", "canary-explain-1")
	a.cli("env", "set", "--user", "alice", "PLAIN_SECRETISH", "canary-explain-2", "--secret")
	var got []explained
	if err := json.Unmarshal([]byte(a.cli("explain", "--workload", "w1", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	by := map[string]explained{}
	for _, e := range got {
		by[e.Name] = e
	}
	check := func(name, layer, value string, overrides ...string) {
		t.Helper()
		e, ok := by[name]
		if !ok {
			t.Errorf("%s missing from explain", name)
			return
		}
		if e.Layer != layer || e.Value != value || strings.Join(e.Overrides, ",") != strings.Join(overrides, ",") {
			t.Errorf("%s: layer %s value %q overrides %v; want %s %q %v", name, e.Layer, e.Value, e.Overrides, layer, value, overrides)
		}
	}
	check("SHARED", "runtime", "runtime", "account", "project", "platform")
	check("EXEC_OVER", "execution", "exec", "runtime")
	check("ACCT_OVER", "account", "account", "project")
	check("HF_TOKEN", "account", "********")
	check("PLAIN_SECRETISH", "account", "********")
	check("PROJECT_ID", "platform", "platform-proj")
	if e := by["CLEAR_ME"]; !e.Cleared || e.Layer != "runtime" {
		t.Errorf("CLEAR_ME: %+v, want cleared by runtime", e)
	}
	// For a user/project pair (what a job form pre-fills): no runtime layers.
	got = nil
	json.Unmarshal([]byte(a.cli("explain", "--user", "alice", "--project", "fraud", "--json")), &got)
	for _, e := range got {
		if e.Name == "SHARED" && (e.Layer != "account" || strings.Join(e.Overrides, ",") != "project,platform") {
			t.Errorf("pair explain SHARED: %+v", e)
		}
		if e.Name == "RT_ONLY" {
			t.Error("pair explain shows a runtime variable")
		}
	}
	// --reveal shows them to an admin.
	out := a.runAs(0, 0, "", nil, bins.envlet, "explain", "--workload", "w1", "--json", "--reveal").stdout
	if !strings.Contains(out, "canary-explain-1") || !strings.Contains(out, "canary-explain-2") {
		t.Error("explain --reveal does not show the masked values to an admin")
	}
	// The text form masks too.
	a.cli("explain", "--workload", "w1")
	a.noCanary("canary-explain-1", "canary-explain-2")
}
