package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/envlet/envlet/agent/api"
)

// refusingAgent fails the test on any call: every refusal must happen
// before the console asks the agent anything.
type refusingAgent struct{ t *testing.T }

func (a refusingAgent) Call(_ context.Context, method, path string, _ url.Values, _, _ any) ([]byte, error) {
	a.t.Errorf("the agent was called: %s %s", method, path)
	return nil, context.Canceled
}

const testHost = "127.0.0.1:4242"

func newTestServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(refusingAgent{t}, testHost)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serve(s *Server, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// signIn spends the token and returns the session cookie and CSRF token.
func signIn(t *testing.T, s *Server) (*http.Cookie, string) {
	t.Helper()
	u, _ := url.Parse(s.LoginURL())
	r := httptest.NewRequest("GET", u.RequestURI(), nil)
	r.Host = testHost
	w := serve(s, r)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", w.Code)
	}
	c := w.Result().Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Name != "envlet_console_4242" {
		t.Errorf("session cookie %+v", c)
	}
	s.mu.Lock()
	csrf := s.sessions[c.Value].csrf
	s.mu.Unlock()
	return c, csrf
}

func TestListenLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "localhost:0", "[::]:0"} {
		if ln, err := Listen(addr); err == nil {
			ln.Close()
			t.Errorf("Listen(%q) accepted", addr)
		}
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

func TestRefusals(t *testing.T) {
	s := newTestServer(t)
	req := func(method, target, host string, form url.Values, cookie *http.Cookie, header map[string]string) *httptest.ResponseRecorder {
		var r *http.Request
		if form != nil {
			r = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			r = httptest.NewRequest(method, target, nil)
		}
		r.Host = host
		if cookie != nil {
			r.AddCookie(cookie)
		}
		for k, v := range header {
			r.Header.Set(k, v)
		}
		return serve(s, r)
	}
	login := s.LoginURL()
	token := login[strings.Index(login, "token=")+6:]

	if w := req("GET", "/env", testHost, nil, nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("no session: %d", w.Code)
	}
	if w := req("GET", "/login?token=wrong", testHost, nil, nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", w.Code)
	}
	if w := req("GET", "/login?token="+token, "evil.test:4242", nil, nil, nil); w.Code != http.StatusMisdirectedRequest {
		t.Errorf("token under a foreign Host: %d", w.Code)
	}
	cookie, csrf := signIn(t, s)
	if w := req("GET", "/login?token="+token, testHost, nil, nil, nil); w.Code != http.StatusUnauthorized {
		t.Errorf("token reused: %d", w.Code)
	}
	for _, host := range []string{"evil.test:4242", "localhost:4242", "127.0.0.1", "127.0.0.1:4243"} {
		if w := req("GET", "/env", host, nil, cookie, nil); w.Code != http.StatusMisdirectedRequest {
			t.Errorf("Host %s: %d", host, w.Code)
		}
	}
	form := url.Values{"name": {"X"}, "value": {"v"}, "new": {"1"}}
	if w := req("POST", "/env/save", testHost, form, cookie, nil); w.Code != http.StatusForbidden {
		t.Errorf("no CSRF token: %d", w.Code)
	}
	form.Set("csrf", csrf+"x")
	if w := req("POST", "/env/save", testHost, form, cookie, nil); w.Code != http.StatusForbidden {
		t.Errorf("wrong CSRF token: %d", w.Code)
	}
	form.Set("csrf", csrf)
	for _, h := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "http://evil.test:4242"},
	} {
		if w := req("POST", "/env/save", testHost, form, cookie, h); w.Code != http.StatusForbidden {
			t.Errorf("post with %v: %d", h, w.Code)
		}
	}
	w := req("GET", "/static/style.css", testHost, nil, nil, nil)
	if w.Code != http.StatusOK {
		t.Errorf("static asset: %d", w.Code)
	}
	for _, want := range []string{"frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(w.Header().Get("Content-Security-Policy"), want) {
			t.Errorf("CSP %q lacks %s", w.Header().Get("Content-Security-Policy"), want)
		}
	}
	if w.Header().Get("X-Frame-Options") != "DENY" || w.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("headers %v", w.Header())
	}
	// No page refers to another origin.
	if w := req("GET", "/login?token=x", testHost, nil, nil, nil); regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(w.Body.String()) {
		t.Errorf("a page loads from another origin:\n%s", w.Body.String())
	}
}

func TestMoved(t *testing.T) {
	list := []string{"a", "b", "c"}
	if got, ok := moved(list, 1, "up"); !ok || strings.Join(got, "") != "bac" {
		t.Errorf("up: %v %v", got, ok)
	}
	if got, ok := moved(list, 1, "down"); !ok || strings.Join(got, "") != "acb" {
		t.Errorf("down: %v %v", got, ok)
	}
	for _, c := range []struct {
		i   int
		dir string
	}{{0, "up"}, {2, "down"}, {-1, "down"}, {5, "up"}} {
		if _, ok := moved(list, c.i, c.dir); ok {
			t.Errorf("moved(%d, %s) allowed", c.i, c.dir)
		}
	}
	if strings.Join(list, "") != "abc" {
		t.Errorf("moved changed its input: %v", list)
	}
}

// TestPreviewHidesMaskedOverrides: an override typed for a masked name is
// neither shown in the preview nor written into the registration.
func TestPreviewHidesMaskedOverrides(t *testing.T) {
	who := &api.Whoami{User: "alice", UID: 1001}
	explained := []api.Explained{
		{Name: "DB_PASSWORD", Value: api.MaskText, Masked: true, Layer: "group:base"},
		{Name: "REGION", Value: "eu", Layer: "group:base"},
	}
	rows, reg, runLine := preview(who, "fraud", explained, map[string]string{
		"DB_PASSWORD": "canary-preview-1", "REGION": "us", "API_TOKEN_X": "canary-preview-2", "RUN": "",
	})
	for _, r := range rows {
		if strings.Contains(r.Value, "canary") || (r.MaskedInput && r.Value != api.MaskText) {
			t.Errorf("row %s shows %q", r.Name, r.Value)
		}
	}
	if strings.Contains(reg, "canary") || strings.Contains(runLine, "canary") {
		t.Errorf("registration or run line holds a masked override:\n%s\n%s", reg, runLine)
	}
	if want := `envlet run --project fraud -e 'API_TOKEN_X=<API_TOKEN_X>' -e 'DB_PASSWORD=<DB_PASSWORD>' -e REGION=us -e RUN= -- CMD`; runLine != want {
		t.Errorf("run line\n%s\nwant\n%s", runLine, want)
	}
	for _, want := range []string{`"REGION": "us"`, `"DB_PASSWORD": "<DB_PASSWORD>"`, `"API_TOKEN_X": "<API_TOKEN_X>"`, `"RUN": ""`, `"uid": 1001`} {
		if !strings.Contains(reg, want) {
			t.Errorf("registration lacks %s:\n%s", want, reg)
		}
	}
	if rows[len(rows)-1].Name != "RUN" || !rows[len(rows)-1].Cleared {
		t.Errorf("an empty override clears: %+v", rows[len(rows)-1])
	}
}

// TestPreviewLeftOut: a layer's variable that is not served shows as its
// own row with the reason and no value, takes no override, and keeps its
// place before the name's winner; a reference's secret scope is kept
// until an override replaces the value.
func TestPreviewLeftOut(t *testing.T) {
	who := &api.Whoami{User: "alice", UID: 1001}
	explained := []api.Explained{
		{Name: "STOLEN", Layer: "project", LeftOut: "a project variable reaches only project p's secrets"},
		{Name: "STOLEN", Value: api.MaskText, Masked: true, Layer: "account", SecretScope: "secret:user:alice"},
		{Name: "ONLY_LEFT", Value: "canary-leftout-1", Layer: "group:g", LeftOut: "protected name"},
		{Name: "FROM_SHARED", Value: api.MaskText, Masked: true, Layer: "project", SecretScope: "secret:project:p"},
	}
	rows, reg, runLine := preview(who, "p", explained, map[string]string{"STOLEN": "x", "ONLY_LEFT": "y"})
	var got []string
	for _, r := range rows {
		got = append(got, fmt.Sprintf("%s/%s/%v/%q/%s", r.Name, r.Layer, r.LeftOut != "", r.Value, r.SecretScope))
		if strings.Contains(r.Value, "canary") {
			t.Errorf("row %s shows a value", r.Name)
		}
	}
	want := []string{
		`FROM_SHARED/project/false/"********"/secret:project:p`,
		`ONLY_LEFT/group:g/true/""/`,
		`ONLY_LEFT/runtime/false/"y"/`,
		`STOLEN/project/true/""/`,
		`STOLEN/runtime/false/"********"/`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(reg, `"STOLEN": "<STOLEN>"`) || !strings.Contains(runLine, `-e ONLY_LEFT=y -e 'STOLEN=<STOLEN>'`) {
		t.Errorf("overrides of left-out names:\n%s\n%s", reg, runLine)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"A=b": "A=b", "A=": "A=", "": "''", "A=two words": "'A=two words'", "A=it's": `'A=it'\''s'`,
		"A=$HOME": "'A=$HOME'", "A=<A>": "'A=<A>'", "A=x;rm": "'A=x;rm'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// A record older than envlet's dates shows "—" and no title; a dated one
// its exact creation time and who changed it last.
func TestDates(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	show := func(d api.Dated) string {
		var b strings.Builder
		if err := pages["secrets"].ExecuteTemplate(&b, "created", d); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	if got := show(api.Dated{}); !strings.Contains(got, "—") || strings.Contains(got, "<time") {
		t.Errorf("undated: %s", got)
	}
	d := api.Dated{CreatedAt: "2026-12-03T19:40:12.5Z", UpdatedAt: "2026-12-04T08:00:00Z", UpdatedBy: "alice"}
	if got := show(d); !strings.Contains(got, `datetime="2026-12-03T19:40:12.5Z"`) || !strings.Contains(got, ">2026-12-03 19:40:12 UTC<") {
		t.Errorf("dated: %s", got)
	}
	if got, want := changedTitle(d), "created 2026-12-03 19:40:12 UTC; changed 2026-12-04 08:00:00 UTC by alice"; got != want {
		t.Errorf("title %q, want %q", got, want)
	}
	if got := changedTitle(api.Dated{}); got != "" {
		t.Errorf("undated title %q", got)
	}
}
