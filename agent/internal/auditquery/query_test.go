package auditquery

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// line is a record as the agent's encoder writes it (field order and all).
func line(sec int, action, user, scope, extra string) string {
	ts := t0.Add(time.Duration(sec) * time.Second).Format(time.RFC3339Nano)
	s := fmt.Sprintf(`{"time":%q,"action":%q,"uid":0,"user":%q`, ts, action, user)
	if scope != "" {
		s += fmt.Sprintf(`,"scope":%q`, scope)
	}
	return s + extra + "}\n"
}

func writeGz(t testing.TB, path, text string) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(text))
	zw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fixture: path.2.gz (oldest), path.1, path (newest).
func fixture(t *testing.T) string {
	dir := t.TempDir()
	p := filepath.Join(dir, "audit.log")
	writeGz(t, p+".2.gz", line(0, "set", "root", "project:fraud", `,"name":"DB_URL","hmac":"aa"`)+
		line(1, "assign", "root", "group:base", `,"name":"fraud"`)+
		line(2, "set", "root", "user:alice", `,"name":"K"`))
	os.WriteFile(p+".1", []byte(line(10, "serve", "1001", "workload:w1", `,"workload":"w1","hmacs":{"user":"x"},"socket":"workload","workload_user":"alice","project":"fraud","groups":["base","gpu"]`)+
		"not json at all\n"+
		line(11, "register", "root", "workload:w2", `,"workload_user":"bob","project":"ml"`)), 0o600)
	os.WriteFile(p, []byte(line(20, "run", "1001", "workload:run-alice-1", `,"workload":"run-alice-1","workload_user":"alice","project":"fraud"`)+
		line(21, "refuse", "1002", "", `,"code":"PERMISSION_DENIED","reason":"\"user\":\"alice\" in a reason"`)+
		line(22, "explain", "root", "user:bob,project:fraud", "")), 0o600)
	return p
}

func actions(r *Result) string {
	var a []string
	for _, x := range r.Records {
		a = append(a, x.Action)
	}
	return strings.Join(a, ",")
}

func TestQuery(t *testing.T) {
	p := fixture(t)
	for _, tt := range []struct {
		name string
		f    Filter
		want string
	}{
		{"All", Filter{}, "set,assign,set,serve,register,run,refuse,explain"},
		{"User", Filter{User: "alice"}, "set,serve,run"}, // the account scope, the workload's user twice; not the reason's text
		{"UserAsCaller", Filter{User: "1002"}, "refuse"},
		{"Project", Filter{Project: "fraud"}, "set,assign,serve,run,explain"},
		{"Projects", Filter{Projects: []string{"ml", "none"}}, "register"},
		{"Group", Filter{Group: "base"}, "assign,serve"},
		{"GroupInList", Filter{Group: "gpu"}, "serve"},
		{"Action", Filter{Action: "set"}, "set,set"},
		{"Since", Filter{Since: t0.Add(11 * time.Second)}, "register,run,refuse,explain"},
		{"Until", Filter{Until: t0.Add(10 * time.Second)}, "set,assign,set,serve"},
		{"SinceUntilSubsecond", Filter{Since: t0.Add(1500 * time.Millisecond), Until: t0.Add(20 * time.Second)}, "set,serve,register,run"},
		{"Both", Filter{User: "alice", Project: "fraud"}, "serve,run"},
		{"NoVariableNamedUser", Filter{User: "x"}, ""}, // hmacs {"user":"x"} is a variable, not the field
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Query(p, tt.f, 100)
			if err != nil {
				t.Fatal(err)
			}
			if got := actions(r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			wantFiles := 3
			if tt.f.Since.After(t0.Add(10 * time.Second)) {
				wantFiles = 2 // audit.log.1 starts before since: audit.log.2.gz is not read
			}
			if len(r.Files) != wantFiles || !strings.HasSuffix(r.Files[len(r.Files)-1], "audit.log") {
				t.Errorf("files %v", r.Files)
			}
		})
	}
}

func TestQueryLimitKeepsNewest(t *testing.T) {
	r, err := Query(fixture(t), Filter{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(r); got != "run,refuse,explain" || !r.Truncated {
		t.Errorf("got %q truncated %v", got, r.Truncated)
	}
}

// A rotation while the files are opened: the same file under two names
// is read once.
func TestQuerySameFileTwice(t *testing.T) {
	p := fixture(t)
	os.Remove(p + ".1")
	if err := os.Link(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	r, err := Query(p, Filter{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(r); got != "set,assign,set,run,refuse,explain" {
		t.Errorf("got %q, files %v", got, r.Files)
	}
}

func TestQueryMissingAndLongLines(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "audit.log")
	r, err := Query(p, Filter{}, 10)
	if err != nil || len(r.Records) != 0 || len(r.Files) != 0 {
		t.Fatalf("no log: %v %+v", err, r)
	}
	long := line(1, "serve", "u", "", `,"reason":"`+strings.Repeat("x", 300<<10)+`"`)
	huge := line(2, "serve", "u", "", `,"reason":"`+strings.Repeat("y", MaxLine)+`"`)
	os.WriteFile(p, []byte(long+huge+line(3, "set", "u", "", "")), 0o600)
	r, err = Query(p, Filter{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(r); got != "serve,set" || r.Skipped != 1 || len(r.Records[0].Reason) != 300<<10 {
		t.Errorf("got %q skipped %d", got, r.Skipped)
	}
}

func FuzzMatcher(f *testing.F) {
	f.Add([]byte(line(1, "serve", "alice", "group:g", `,"groups":["g"]`)), "alice", "p", "g")
	f.Fuzz(func(t *testing.T, b []byte, user, project, group string) {
		for _, s := range []string{user, project, group} {
			if !validName(s) {
				return
			}
		}
		m := newMatcher(Filter{User: user, Project: project, Group: group, Since: t0, Until: t0.Add(time.Hour)})
		m.when(b)
		m.match(b)
	})
}

func validName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
