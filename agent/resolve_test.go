package agent

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func testAgent(t *testing.T) *Agent {
	t.Helper()
	cfg := baseConfig()
	cfg.Defaults = []Default{{"PATH", "/bin"}, {"SHARED", "platform"}, {"PROJECT_ID", "from-platform"}}
	a := New(cfg, hclog.NewNullLogger())
	a.setPlatform()
	return a
}

func vars(a *Agent, kv ...string) varSet {
	s := varSet{}
	for i := 0; i < len(kv); i += 2 {
		s[kv[i]] = &variable{val: a.pool.Copy(append([]byte{0}, kv[i+1]...))}
	}
	return s
}

func TestResolve(t *testing.T) {
	for _, tt := range []struct {
		name      string
		member    bool
		account   []string
		project   []string
		groups    [][]string // in the project's order: a later one wins
		runtime   map[string]string
		execution map[string]string
		want      map[string]string // "" = cleared (unset)
		layer     map[string]string
		ignored   []string
	}{
		{name: "ExecutionBeatsRuntime",
			runtime: map[string]string{"X": "rt"}, execution: map[string]string{"X": "ex"},
			want: map[string]string{"X": "ex"}, layer: map[string]string{"X": "execution"}},
		{name: "RuntimeBeatsAccount", member: true,
			account: []string{"X", "acct"}, runtime: map[string]string{"X": "rt"},
			want: map[string]string{"X": "rt"}},
		{name: "AccountBeatsProject", member: true,
			account: []string{"X", "acct"}, project: []string{"X", "proj"},
			want: map[string]string{"X": "acct"}, layer: map[string]string{"X": "account"}},
		{name: "AccountOnlyForMembers", member: false,
			account: []string{"X", "acct"}, project: []string{"X", "proj"},
			want: map[string]string{"X": "proj"}},
		{name: "ProjectBeatsGroups",
			project: []string{"X", "proj"}, groups: [][]string{{"X", "g1"}},
			want: map[string]string{"X": "proj"}},
		{name: "LaterGroupWins",
			groups: [][]string{{"X", "g1", "Y", "g1"}, {"X", "g2"}},
			want:   map[string]string{"X": "g2", "Y": "g1"}, layer: map[string]string{"X": "group:g1", "Y": "group:g0"}}, // groups are named g0, g1… in order
		{name: "GroupsBeatPlatform",
			groups: [][]string{{"SHARED", "g"}},
			want:   map[string]string{"SHARED": "g"}},
		{name: "EmptyClears", member: true,
			account: []string{"SHARED", ""},
			want:    map[string]string{"SHARED": ""}, layer: map[string]string{"SHARED": "account"}},
		{name: "ReservedIgnored", member: true,
			runtime: map[string]string{"PROJECT_ID": "evil", "HOPS_X": "evil"}, account: []string{"ENVLET_SOCKET", "evil"},
			want: map[string]string{"PROJECT_ID": "from-platform"}, layer: map[string]string{"PROJECT_ID": "platform"},
			ignored: []string{"account/ENVLET_SOCKET", "runtime/HOPS_X", "runtime/PROJECT_ID"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testAgent(t)
			p := a.model.project("p")
			p.metaRev = 1
			if tt.member {
				p.meta.Members = []string{"u"}
			}
			p.vars = vars(a, tt.project...)
			a.model.user("u").vars = vars(a, tt.account...)
			for i, g := range tt.groups {
				name := "g" + string(rune('0'+i))
				p.meta.Groups = append(p.meta.Groups, name)
				gr := a.model.group(name)
				gr.metaRev = 1
				gr.vars = vars(a, g...)
			}
			w := &workload{runtime: a.ownVars(tt.runtime), execution: a.ownVars(tt.execution)}
			var ignored []string
			res := a.resolve(a.layersFor("u", "p", w), func(l, n string) { ignored = append(ignored, l+"/"+n) })
			got := map[string]resolved{}
			for _, r := range res {
				got[r.name] = r
			}
			for n, want := range tt.want {
				r, ok := got[n]
				if !ok || string(r.value) != want {
					t.Errorf("%s = %q (present %v), want %q", n, r.value, ok, want)
				}
			}
			for n, l := range tt.layer {
				if got[n].layer != l {
					t.Errorf("%s from %s, want %s", n, got[n].layer, l)
				}
			}
			if strings.Join(sorted(ignored), ",") != strings.Join(tt.ignored, ",") {
				t.Errorf("ignored %v, want %v", ignored, tt.ignored)
			}
		})
	}
}

func sorted(s []string) []string {
	out := append([]string{}, s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestMasked(t *testing.T) {
	for name, want := range map[string]bool{
		"PATH": false, "HF_TOKEN": true, "db_password": true, "AWS_SECRET_ACCESS_KEY": true,
		"MONKEY": true, // contains "key": masked, as the rule says; better masked than shown
		"LR":     false,
	} {
		if masked(name, false) != want {
			t.Errorf("masked(%s) = %v", name, !want)
		}
	}
	if !masked("LR", true) {
		t.Error("a secret-flagged value is not masked")
	}
}
