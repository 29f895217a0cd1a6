package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The web console (`envlet ui`, package console) driven by Debian's real
// headless Chromium against a real agent, as root (an admin) and as a uid
// with no passwd entry (a project member).

const chromiumPath = "/usr/bin/chromium"

func needChromium(t *testing.T) {
	t.Helper()
	if os.Getenv("ENVLET_E2E_BACKEND") == "etcd" {
		// The console sees only the admin API, the same on every backend:
		// one pass (make test's first) is enough, and CI time is dear.
		t.Skip("the console's browser tests run on the local backend only")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s is missing (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("%s is missing (apt-get install chromium): the console's browser tests need it", chromiumPath)
	}
}

// consoleProc is a running `envlet ui`.
type consoleProc struct {
	login string // the printed sign-in URL
	base  string // http://127.0.0.1:PORT
	host  string // 127.0.0.1:PORT
}

// startConsole runs the real `envlet ui` binary as uid against the agent
// and reads the URL it prints.
func startConsole(t *testing.T, a *agentProc, uid uint32) *consoleProc {
	t.Helper()
	cmd := exec.Command(bins.envlet, "ui")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "ENVLET_ADMIN_SOCKET=" + a.adminSock}
	cmd.Dir = "/"
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	errs := newLogBuf()
	cmd.Stderr = errs
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		a.record("envlet ui stderr", errs.String())
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		a.record("envlet ui stdout", line)
		if strings.HasPrefix(line, "http://") {
			u, err := url.Parse(line)
			if err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, out)
			return &consoleProc{login: line, base: "http://" + u.Host, host: u.Host}
		}
	}
	t.Fatalf("envlet ui printed no URL; stderr:\n%s", errs.String())
	return nil
}

// newBrowser starts a headless Chromium with its own profile. evil.test
// resolves to 127.0.0.1: a rebinding attacker's name for the console.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // the tests run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("host-resolver-rules", "MAP evil.test 127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if os.Getenv("CONSOLE_DEBUG") != "" {
		chromedp.Listen(ctx, func(ev any) {
			switch e := ev.(type) {
			case *cdpruntime.EventConsoleAPICalled:
				for _, a := range e.Args {
					t.Logf("console: %s", a.Value)
				}
			case *cdpruntime.EventExceptionThrown:
				t.Logf("exception: %s", e.ExceptionDetails.Text)
			case *page.EventJavascriptDialogOpening:
				t.Logf("dialog: %s", e.Message)
			}
		})
	}
	// Delete buttons ask for confirmation: say yes.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return ctx
}

// do runs browser actions, bounded by hangGuard.
func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// submit runs the action that submits a form and waits for the page it
// leads to (after any redirect) to load.
func submit(t *testing.T, ctx context.Context, action chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	loaded := chromedp.Events(tctx, page.LoadEventFired)
	do(t, ctx, action)
	for _, err := range loaded {
		if err != nil {
			t.Fatalf("waiting for the next page: %v", err)
		}
		break
	}
}

// waitJS waits for a JavaScript expression to be true on the page.
func waitJS(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	if err := chromedp.Do(tctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(hangGuard))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("waiting for %s: %v; page:\n%s", expr, err, html)
	}
}

func jsString(s string) string { return strconv.Quote(s) }

// flashIs waits for the page's status line to say want.
func flashIs(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	got := run(t, ctx, chromedp.Text(chromedp.CSS("#flash")))
	if !strings.Contains(got, want) {
		t.Fatalf("status line %q, want %q; page:\n%s", got, want, run(t, ctx, chromedp.OuterHTML(chromedp.CSS("main"))))
	}
}

// pages collects what the console showed, for the canary check, and
// writes a screenshot of it when ENVLET_SCREENSHOTS names a directory
// (make screenshots).
type pages struct {
	t *testing.T
	a *agentProc
}

func (p pages) snap(ctx context.Context, name string) string {
	p.t.Helper()
	html := run(p.t, ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	p.a.record("console page "+name, html)
	if dir := os.Getenv("ENVLET_SCREENSHOTS"); dir != "" && name != "" {
		png := run(p.t, ctx, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	return html
}

// TestConsole: sign in through the token URL; add, edit, reveal and delete
// a variable; secrets from text and from a file, read back byte for byte;
// an admin creates a group, fills and assigns it; a member sees it
// read-only and masked; no page shows a canary unrevealed.
func TestConsole(t *testing.T) {
	needChromium(t)
	a := startAgent(t, "")
	member := freeUID(t)
	ms := strconv.Itoa(int(member))
	a.cli("env", "set", "DB_TOKEN", "canary-console-env-1")
	a.cli("env", "set", "LOG_LEVEL", "info")
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "fraud", ms)
	a.cli("project", "add-member", "--owner", "fraud", "root")
	a.cli("project", "env", "set", "fraud", "MODEL_BUCKET", "s3://models/fraud")
	a.cli("group", "create", "base")
	a.cli("group", "set", "base", "REGION", "eu-north-1")
	a.cli("group", "set", "base", "DB_PASSWORD", "canary-console-group-1")
	a.cli("group", "assign", "base", "fraud")
	a.register(map[string]any{"id": "trainer", "user": "root", "project": "fraud", "match": map[string]any{"uid": 0}})
	// A project variable pointing at the member's private secret: not
	// served to the member (explain says left out, and why); the member's
	// own reference to it is, through the account layer.
	a.mustAs(member, "secret", "create", "MEMBER_PRIV", "canary-console-priv-1")
	a.mustAs(member, "env", "set", "MINE", "--from-secret", "MEMBER_PRIV")
	a.cli("project", "env", "set", "fraud", "STOLEN", "--from-secret", "MEMBER_PRIV")
	canaries := []string{"canary-console-env-1", "canary-console-env-2", "canary-console-group-1",
		"canary-console-group-2", "canary-console-secret-1", "canary-console-file-1", "canary-console-priv-1"}
	snaps := pages{t, a}

	ui := startConsole(t, a, 0)
	ctx := newBrowser(t)

	// Sign in: the token URL sets the session and lands on the account page.
	do(t, ctx, chromedp.Navigate(ui.login))
	waitJS(t, ctx, "location.pathname === '/env'")
	if who := run(t, ctx, chromedp.Text(chromedp.ID("who"))); who != "root" {
		t.Fatalf("signed in as %q, want root", who)
	}
	if html := snaps.snap(ctx, "env"); !strings.Contains(html, "DB_TOKEN") || !strings.Contains(html, "LOG_LEVEL") {
		t.Fatalf("account page lacks the variables:\n%s", html)
	}

	// Add with the keyboard only: type in the empty row, Enter submits.
	do(t, ctx, chromedp.SendKeys(chromedp.CSS(`tr.add input[name=name]`), "GREETING"))
	submit(t, ctx, chromedp.SendKeys(chromedp.CSS(`tr.add input[name=value]`), "hello world\r"))
	flashIs(t, ctx, "Saved GREETING.")
	// A refused name: the agent's code beside the row.
	do(t, ctx, chromedp.SendKeys(chromedp.CSS(`tr.add input[name=name]`), "API_KEY"),
		chromedp.SendKeys(chromedp.CSS(`tr.add input[name=value]`), "x"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`tr.add button`)))
	if got := run(t, ctx, chromedp.Text(chromedp.CSS(`tr.add .rowerr`))); !strings.Contains(got, "ENV_VAR_RESERVED_NAME") {
		t.Errorf("reserved name: row error %q", got)
	}
	snaps.snap(ctx, "env-error")
	// A secret one, typed in: masked once saved.
	do(t, ctx, chromedp.SendKeys(chromedp.CSS(`tr.add input[name=name]`), "SESSION_SALT"),
		chromedp.SendKeys(chromedp.CSS(`tr.add input[name=value]`), "canary-console-env-2"),
		chromedp.Click(chromedp.CSS(`tr.add input[name=secret]`)))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`tr.add button`)))
	flashIs(t, ctx, "Saved SESSION_SALT.")
	snaps.snap(ctx, "")
	if out := a.cli("env", "list", "--json"); !regexp.MustCompile(`"SESSION_SALT",\s*"value": "\*+",\s*"secret": true`).MatchString(out) {
		t.Errorf("SESSION_SALT not stored secret: %s", out)
	}

	// Edit inline.
	do(t, ctx, chromedp.SetValue(chromedp.CSS(`#var-GREETING input[name=value]`), "hello again"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`#var-GREETING form[action="/env/save"] button`)))
	flashIs(t, ctx, "Saved GREETING.")
	if out := a.cli("env", "list"); !strings.Contains(out, "GREETING=hello again") {
		t.Errorf("after the edit: %s", out)
	}

	// Reveal is a request of its own, which the agent audits.
	do(t, ctx, chromedp.Click(chromedp.CSS(`#var-DB_TOKEN form.reveal button`)))
	waitJS(t, ctx, `document.querySelector('#var-DB_TOKEN input[name=value]').value === "canary-console-env-1"`)
	if b, _ := os.ReadFile(a.audit); !regexp.MustCompile(`"action":"reveal"[^\n]*"name":"DB_TOKEN"`).Match(b) {
		t.Errorf("no reveal of DB_TOKEN in the audit log:\n%s", b)
	}

	// Without JavaScript the eye is a plain form: the page comes back
	// with that one value shown.
	do(t, ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}), chromedp.Navigate(ui.base+"/env"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`#var-SESSION_SALT form.reveal button`)))
	if v := run(t, ctx, chromedp.Value(chromedp.CSS(`#var-SESSION_SALT input[name=value]`))); v != "canary-console-env-2" {
		t.Errorf("reveal without JavaScript shows %q", v)
	}
	do(t, ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false})
		return err
	}))

	// Delete (the confirmation is accepted).
	do(t, ctx, chromedp.Navigate(ui.base+"/env"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`#var-GREETING form.delete button`)))
	flashIs(t, ctx, "Deleted GREETING.")
	if out := a.cli("env", "list"); strings.Contains(out, "GREETING") {
		t.Errorf("GREETING still there: %s", out)
	}
	snaps.snap(ctx, "")

	// Secrets: a text one, read in the page.
	before := time.Now().UTC()
	do(t, ctx, chromedp.Navigate(ui.base+"/secrets"),
		chromedp.SendKeys(chromedp.ID("secret-name"), "SMTP_PASSWORD"),
		chromedp.SetValue(chromedp.ID("secret-value"), "canary-console-secret-1"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/secrets/create"] button[type=submit]`)))
	flashIs(t, ctx, "Created secret SMTP_PASSWORD.")
	// A file, uploaded, in the project.
	content := append([]byte("canary-console-file-1\x00\xff\n"), make([]byte, 3000)...)
	rand.Read(content[24:])
	upload := filepath.Join(t.TempDir(), "client.p12")
	os.WriteFile(upload, content, 0o600)
	do(t, ctx, chromedp.SendKeys(chromedp.ID("secret-name"), "CLIENT_CERT"),
		chromedp.SetValue(chromedp.ID("secret-scope"), "fraud"),
		chromedp.Click(chromedp.ID("kind-file")),
		chromedp.SetUploadFiles(chromedp.ID("secret-file"), []string{upload}))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/secrets/create"] button[type=submit]`)))
	flashIs(t, ctx, "Created secret CLIENT_CERT.")
	if html := snaps.snap(ctx, "secrets"); !strings.Contains(html, "CLIENT_CERT") || !strings.Contains(html, "SMTP_PASSWORD") {
		t.Fatalf("secrets page lacks the new secrets:\n%s", html)
	} else if strings.Contains(html, "MEMBER_PRIV") {
		t.Errorf("the secrets page lists another user's private secret:\n%s", html)
	}
	// One GET /v1/secrets gives each its visibility and creation date.
	after := time.Now().UTC()
	for _, row := range []struct{ id, visibility string }{
		{"secret-private-SMTP_PASSWORD", "private"}, {"secret-fraud-CLIENT_CERT", "project fraud"}} {
		sel := `[id="` + row.id + `"] `
		if got := run(t, ctx, chromedp.Text(chromedp.CSS(sel+"td.visibility"))); got != row.visibility {
			t.Errorf("%s: visibility %q, want %q", row.id, got, row.visibility)
		}
		created := run(t, ctx, chromedp.Attributes(chromedp.CSS(sel+"td.created time")))["datetime"]
		at, err := time.Parse(time.RFC3339, created)
		if err != nil || !strings.HasSuffix(created, "Z") {
			t.Errorf("%s: created %q is not RFC 3339 in UTC (%v)", row.id, created, err)
			continue
		}
		day := at.Format(time.DateOnly)
		if day != before.Format(time.DateOnly) && day != after.Format(time.DateOnly) {
			t.Errorf("%s: created %q, not today (%s)", row.id, created, before.Format(time.DateOnly))
		}
		if shown := run(t, ctx, chromedp.Text(chromedp.CSS(sel+"td.created time"))); !strings.HasPrefix(shown, day) {
			t.Errorf("%s: the page shows creation date %q for %q", row.id, shown, created)
		}
	}
	do(t, ctx, chromedp.Click(chromedp.CSS(`[id="secret-private-SMTP_PASSWORD"] form[action="/secrets/read"] button`)))
	waitJS(t, ctx, `document.getElementById("sv-private-SMTP_PASSWORD").textContent === "canary-console-secret-1"`)
	// Read the file back: a download of the very bytes.
	downloads := t.TempDir()
	progress := chromedp.Events(ctx, browser.DownloadProgress)
	do(t, ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		allow := true
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: &allow})
		return err
	}), chromedp.Click(chromedp.CSS(`[id="secret-fraud-CLIENT_CERT"] form[action="/secrets/read"] button`)))
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("download canceled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			got, err := os.ReadFile(filepath.Join(downloads, ev.GUID))
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("downloaded file differs (%d bytes, want %d; %v)", len(got), len(content), err)
			}
			break
		}
	}

	// Organization: create a group, fill it, assign it, order it.
	do(t, ctx, chromedp.Navigate(ui.base+"/org"))
	submit(t, ctx, chromedp.SendKeys(chromedp.ID("group-name"), "ml\r"))
	flashIs(t, ctx, "Created group ml.")
	addGroupVar := func(name, value string, secret bool) {
		t.Helper()
		do(t, ctx, chromedp.SendKeys(chromedp.CSS(`#group-ml tr.add input[name=name]`), name),
			chromedp.SendKeys(chromedp.CSS(`#group-ml tr.add input[name=value]`), value))
		if secret {
			do(t, ctx, chromedp.Click(chromedp.CSS(`#group-ml tr.add input[name=secret]`)))
		}
		submit(t, ctx, chromedp.Click(chromedp.CSS(`#group-ml tr.add button`)))
		flashIs(t, ctx, "Saved "+name+" in ml.")
	}
	addGroupVar("ML_SEED", "canary-console-group-2", true)
	addGroupVar("ML_FRAMEWORK", "torch", false)
	do(t, ctx, chromedp.SetValue(chromedp.CSS(`#group-ml select[name=project]`), "fraud"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`#group-ml form[action="/org/assign"] button`)))
	flashIs(t, ctx, "Group ml: assigned fraud.")
	snaps.snap(ctx, "org")
	// ml applies after base; move it up, then it applies first.
	submit(t, ctx, chromedp.Click(chromedp.CSS(`section[aria-labelledby="order-fraud"] li:nth-child(2) form button`)))
	flashIs(t, ctx, "Reordered the groups of fraud.")
	if order := run(t, ctx, chromedp.Text(chromedp.CSS(`section[aria-labelledby="order-fraud"] ol`))); strings.Index(order, "ml") > strings.Index(order, "base") {
		t.Errorf("order after moving ml up: %q", order)
	}

	// The project as its admin: every layer, and a preview with an override.
	do(t, ctx, chromedp.Navigate(ui.base+"/projects"))
	snaps.snap(ctx, "projects")
	do(t, ctx, chromedp.Navigate(ui.base+"/projects/fraud"))
	snaps.snap(ctx, "project")
	do(t, ctx, chromedp.Click(chromedp.CSS(`input[name="use.REGION"]`)),
		chromedp.SetValue(chromedp.CSS(`input[name="o.REGION"]`), "us-east-1"),
		chromedp.SetValue(chromedp.CSS(`input[name=new_name]`), "RUN_LABEL"),
		chromedp.SetValue(chromedp.CSS(`input[name=new_value]`), "nightly"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/projects/fraud/preview#preview"] button[type=submit]`)))
	reg := run(t, ctx, chromedp.Text(chromedp.ID("registration-json")))
	for _, want := range []string{`"project": "fraud"`, `"REGION": "us-east-1"`, `"RUN_LABEL": "nightly"`, `"uid": 0`} {
		if !strings.Contains(reg, want) {
			t.Errorf("registration lacks %s:\n%s", want, reg)
		}
	}
	snaps.snap(ctx, "project-preview")
	// The run line beside it: run as printed, with a real program for
	// CMD, it starts that program with the overrides.
	runLine := run(t, ctx, chromedp.Text(chromedp.ID("run-line")))
	const wantRun = "envlet run --project fraud -e REGION=us-east-1 -e RUN_LABEL=nightly -- CMD"
	if runLine != wantRun {
		t.Errorf("run line %q, want %q", runLine, wantRun)
	} else {
		args := strings.Fields(strings.TrimSuffix(runLine, " CMD"))[1:]
		r := a.runCLI(0, append(args, "sh", "-c", `echo "REGION=$REGION RUN_LABEL=$RUN_LABEL"`)...)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "REGION=us-east-1 RUN_LABEL=nightly" {
			t.Errorf("the page's run line did not reproduce the preview: %s", r)
		}
	}

	do(t, ctx, chromedp.Navigate(ui.base+"/workloads"))
	if html := snaps.snap(ctx, "workloads"); !strings.Contains(html, "trainer") {
		t.Errorf("workloads page lacks trainer")
	}
	// Audit: the run just done, found with the page's filters (newest
	// first), and the reveal of DB_TOKEN done in this console.
	do(t, ctx, chromedp.Navigate(ui.base+"/audit"),
		chromedp.SendKeys(chromedp.ID("f-project"), "fraud"),
		chromedp.SendKeys(chromedp.ID("f-action"), "run"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`form.filters button`)))
	rows := run(t, ctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll('#audit-records tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()))`))
	if len(rows) == 0 || len(rows[0]) < 10 || rows[0][1] != "run" || rows[0][2] != "root" || rows[0][5] != "fraud" {
		t.Errorf("audit page, project fraud, action run: rows %q, want the run just done first", rows)
	}
	do(t, ctx, chromedp.Navigate(ui.base+"/audit?action=reveal&user=root"))
	if got := run(t, ctx, chromedp.Text(chromedp.ID("audit-records"))); !strings.Contains(got, "DB_TOKEN") {
		t.Errorf("audit page lacks the reveal of DB_TOKEN:\n%s", got)
	}
	do(t, ctx, chromedp.Navigate(ui.base+"/audit"))
	snaps.snap(ctx, "audit")
	do(t, ctx, chromedp.SendKeys(chromedp.ID("hmac-value"), "canary-console-env-1"))
	submit(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/audit/hmac"] button`)))
	if h := run(t, ctx, chromedp.Text(chromedp.ID("hmac"))); !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(h) {
		t.Errorf("audit HMAC %q", h)
	} else if b, _ := os.ReadFile(a.audit); !strings.Contains(string(b), h) {
		t.Errorf("the HMAC of DB_TOKEN's value is not in the audit log (its write is)")
	}
	snaps.snap(ctx, "")

	// 200% zoom: half the CSS width at twice the pixels; the account
	// page still fits without scrolling sideways.
	do(t, ctx, chromedp.EmulateViewport(640, 450, chromedp.EmulateScale(2)), chromedp.Navigate(ui.base+"/env"))
	if w := run(t, ctx, chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, window.innerWidth]`)); w[0] > w[1] {
		t.Errorf("at 200%% zoom the account page is %d CSS px wide in a %d px window", w[0], w[1])
	}
	snaps.snap(ctx, "env-zoom-200")
	do(t, ctx, chromedp.EmulateReset())

	// A member, in a browser of their own: the project's groups read-only
	// and masked, in the order they apply; no edit controls.
	mui := startConsole(t, a, member)
	mctx := newBrowser(t)
	do(t, mctx, chromedp.Navigate(mui.login))
	waitJS(t, mctx, "location.pathname === '/env'")
	if who := run(t, mctx, chromedp.Text(chromedp.ID("who"))); who != ms {
		t.Fatalf("member signed in as %q, want %s", who, ms)
	}
	do(t, mctx, chromedp.Navigate(mui.base+"/projects/fraud"))
	html := snaps.snap(mctx, "project-member")
	for _, want := range []string{"ML_SEED", "ML_FRAMEWORK", "torch", "REGION", "eu-north-1", "DB_PASSWORD", "MODEL_BUCKET"} {
		if !strings.Contains(html, want) {
			t.Errorf("member's project page lacks %s", want)
		}
	}
	// The preview shows the project's reference to the member's secret
	// struck out with the reason, no value and nothing to override; the
	// member's own reference with whose secret it took.
	left := run(t, mctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('table.preview tr.leftout')].map(r => r.textContent.replace(/\s+/g, ' ').trim())`))
	if len(left) != 1 || !strings.Contains(left[0], "STOLEN") || !strings.Contains(left[0], "left out") || !strings.Contains(left[0], "project fraud") {
		t.Errorf("member's preview, left-out rows %q: want STOLEN with its reason", left)
	}
	if n := run(t, mctx, chromedp.Evaluate[int](`document.querySelectorAll('table.preview tr.leftout input').length`)); n != 0 {
		t.Errorf("a left-out row has %d override inputs", n)
	}
	mine := run(t, mctx, chromedp.Evaluate[string](`[...document.querySelectorAll('table.preview tbody tr')].filter(r => r.querySelector('th').textContent.trim() === 'MINE').map(r => r.textContent.replace(/\s+/g, ' ')).join('|')`))
	if !strings.Contains(mine, "secret:user:"+ms) || !strings.Contains(mine, "••••••••") {
		t.Errorf("member's preview of MINE %q: want masked, from secret:user:%s", mine, ms)
	}
	counts := run(t, mctx, chromedp.Evaluate[[]int](`[
		document.querySelectorAll('section.group input, section.group button').length,
		document.querySelectorAll('#variables ~ table tr.add, form[action$="/save"], form[action$="/members/add"]').length,
		document.querySelectorAll('a[href="/org"]').length,
		[...document.querySelectorAll('section.group h3')].map(h => h.textContent).join('|') === "1. ml|2. base" ? 1 : 0,
		[...document.querySelectorAll('#pgroup-ml tr')].filter(r => r.textContent.includes('ML_SEED') && r.textContent.includes('••••••••')).length]`))
	if fmt.Sprint(counts) != "[0 0 0 1 1]" {
		t.Errorf("member view [group controls, edit forms, org link, group order ok, ML_SEED masked] = %v, want [0 0 0 1 1]", counts)
	}

	a.noCanary(canaries...)
}

// TestConsoleAudit: the Audit page as the agent allows it. A project
// owner sees the records of their project only, and is refused another's;
// a plain member is refused, and the page says so; no page shows a value.
func TestConsoleAudit(t *testing.T) {
	needChromium(t)
	a := startAgent(t, "")
	u := freeUIDs(t, 2)
	owner, member := u[0], u[1]
	a.cli("project", "create", "fraud")
	a.cli("project", "add-member", "--owner", "fraud", uidName(owner))
	a.cli("project", "add-member", "fraud", uidName(member))
	a.cli("project", "create", "other")
	a.cli("project", "env", "set", "other", "OTHER_TOKEN", "canary-console-audit-1")
	a.cli("project", "env", "set", "fraud", "FRAUD_LEVEL", "3")
	a.mustAs(owner, "project", "env", "set", "fraud", "FRAUD_KEY", "canary-console-audit-2")
	a.mustAs(member, "env", "set", "MEMBER_PASSWORD", "canary-console-audit-3")
	snaps := pages{t, a}

	cells := func(ctx context.Context) [][]string {
		t.Helper()
		return run(t, ctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll('#audit-records tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()))`))
	}
	oui := startConsole(t, a, owner)
	octx := newBrowser(t)
	do(t, octx, chromedp.Navigate(oui.login))
	waitJS(t, octx, "location.pathname === '/env'")
	do(t, octx, chromedp.Navigate(oui.base+"/audit"))
	html := snaps.snap(octx, "audit-owner")
	rows := cells(octx)
	var names []string
	for _, r := range rows {
		if len(r) < 10 {
			t.Fatalf("owner's audit page: row %q", r)
		}
		names = append(names, r[8])
		if r[5] != "fraud" && !strings.Contains(r[7], "fraud") && r[8] != "fraud" {
			t.Errorf("owner's audit page shows a record not of fraud: %q", r)
		}
	}
	if !slices.Contains(names, "FRAUD_LEVEL") || !slices.Contains(names, "FRAUD_KEY") {
		t.Errorf("owner's audit page: names %q, want the sets of FRAUD_LEVEL and FRAUD_KEY", names)
	}
	if strings.Contains(html, "OTHER_TOKEN") || strings.Contains(html, "MEMBER_PASSWORD") {
		t.Errorf("owner's audit page shows another project's or a member's own record:\n%s", html)
	}
	if strings.Contains(html, `"hmac"`) || regexp.MustCompile(`[0-9a-f]{64}`).MatchString(html) {
		t.Errorf("owner's audit page shows an HMAC")
	}
	// Another project's records: the agent refuses, the page says so.
	do(t, octx, chromedp.Navigate(oui.base+"/audit?project=other"))
	if m := run(t, octx, chromedp.Text(chromedp.ID("audit-refused"))); !strings.Contains(m, "PERMISSION_DENIED") {
		t.Errorf("owner asking for project other: %q", m)
	}
	if n := run(t, octx, chromedp.Evaluate[int](`document.querySelectorAll('#audit-records').length`)); n != 0 {
		t.Errorf("a refused query still shows a table")
	}

	mui := startConsole(t, a, member)
	mctx := newBrowser(t)
	do(t, mctx, chromedp.Navigate(mui.login))
	waitJS(t, mctx, "location.pathname === '/env'")
	do(t, mctx, chromedp.Navigate(mui.base+"/audit"))
	snaps.snap(mctx, "audit-member")
	if m := run(t, mctx, chromedp.Text(chromedp.ID("audit-refused"))); !strings.Contains(m, "refused") || !strings.Contains(m, "PERMISSION_DENIED") {
		t.Errorf("member's audit page: %q, want the agent's refusal", m)
	}
	if n := run(t, mctx, chromedp.Evaluate[int](`document.querySelectorAll('#audit-records, #hmac-value').length`)); n != 0 {
		t.Errorf("member's audit page shows %d record tables or HMAC forms", n)
	}
	a.noCanary("canary-console-audit-1", "canary-console-audit-2", "canary-console-audit-3")
}

// TestConsoleRefusals: no session, a reused token, a foreign Host (DNS
// rebinding), a cross-site form post, a post without the session's CSRF
// token, and framing are all refused.
func TestConsoleRefusals(t *testing.T) {
	needChromium(t)
	a := startAgent(t, "")
	ui := startConsole(t, a, 0)
	ctx := newBrowser(t)
	do(t, ctx, chromedp.Navigate(ui.login))
	waitJS(t, ctx, "location.pathname === '/env'")
	csrf := run(t, ctx, chromedp.Evaluate[string](`document.querySelector('input[name=csrf]').value`))
	res := run(t, ctx, chromedp.Action[*network.GetCookiesResult](func(ctx context.Context, _ *chromedp.Target) (*network.GetCookiesResult, error) {
		r, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{ui.base + "/"}})
		return &r, err
	}))
	var session *http.Cookie
	for _, c := range res.Cookies {
		if strings.HasPrefix(c.Name, "envlet_console_") {
			session = &http.Cookie{Name: c.Name, Value: c.Value}
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
				t.Errorf("session cookie HttpOnly=%v SameSite=%q", c.HTTPOnly, c.SameSite)
			}
		}
	}
	if session == nil {
		t.Fatalf("no session cookie in %+v", res.Cookies)
	}

	message := func(ctx context.Context) string {
		return run(t, ctx, chromedp.Text(chromedp.ID("message")))
	}
	// A browser without the session, and the token used a second time.
	fresh := newBrowser(t)
	do(t, fresh, chromedp.Navigate(ui.base+"/env"))
	if m := message(fresh); !strings.Contains(m, "Not signed in") {
		t.Errorf("no session: %q", m)
	}
	do(t, fresh, chromedp.Navigate(ui.login))
	if m := message(fresh); !strings.Contains(m, "used already") {
		t.Errorf("token reused: %q", m)
	}
	// DNS rebinding: the console's address under another name.
	port := ui.host[strings.LastIndex(ui.host, ":")+1:]
	do(t, ctx, chromedp.Navigate("http://evil.test:"+port+"/env"))
	if m := message(ctx); !strings.Contains(m, "answers at http://"+ui.host) {
		t.Errorf("foreign Host: %q", m)
	}

	// An attacker's page posts a form to the console and frames it.
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		switch r.URL.Path {
		case "/frame":
			fmt.Fprintf(w, `<iframe id="f" src="%s/env"></iframe>`, ui.base)
		default:
			fmt.Fprintf(w, `<form id="f" method="post" action="%s/env/save">
<input name="new" value="1"><input name="name" value="PWNED"><input name="value" value="x"><input name="csrf" value="guess"></form>
<script>document.getElementById("f").submit()</script>`, ui.base)
		}
	}))
	defer attacker.Close()
	evil := "http://evil.test:" + attacker.URL[strings.LastIndex(attacker.URL, ":")+1:]
	do(t, ctx, chromedp.Navigate(evil+"/"))
	waitJS(t, ctx, `location.host === `+jsString(ui.host)+` && document.readyState === 'complete'`)
	if m := message(ctx); !strings.Contains(m, "Not signed in") && !strings.Contains(m, "Refused") {
		t.Errorf("cross-site post: %q", m)
	}

	// The same with the session cookie and even the right CSRF token, from
	// a client that says where it comes from: refused by origin; then a
	// same-origin post with a wrong token: refused by token.
	post := func(host string, form url.Values, header map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", ui.base+"/env/save", strings.NewReader(form.Encode()))
		req.Host = host
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(session)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	form := url.Values{"new": {"1"}, "name": {"PWNED"}, "value": {"x"}, "csrf": {csrf}}
	if r := post(ui.host, form, map[string]string{"Origin": evil, "Sec-Fetch-Site": "cross-site"}); r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site post with the session and token: %s", r.Status)
	}
	if r := post("evil.test:"+port, form, nil); r.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("post with the session under a foreign Host: %s", r.Status)
	}
	bad := url.Values{"new": {"1"}, "name": {"PWNED"}, "value": {"x"}, "csrf": {"guess"}}
	if r := post(ui.host, bad, map[string]string{"Origin": ui.base, "Sec-Fetch-Site": "same-origin"}); r.StatusCode != http.StatusForbidden {
		t.Errorf("post with a wrong CSRF token: %s", r.Status)
	}
	if out := a.cli("env", "list"); strings.Contains(out, "PWNED") {
		t.Fatalf("a refused post wrote: %s", out)
	}
	// Control: the same request as the console's own page sends it works.
	if r := post(ui.host, form, map[string]string{"Origin": ui.base, "Sec-Fetch-Site": "same-origin"}); r.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin post with the token: %s", r.Status)
	}
	if out := a.cli("env", "list"); !strings.Contains(out, "PWNED=x") {
		t.Errorf("the control post did not write: %s", out)
	}

	// Framing: every answer forbids it, and the browser does not load it.
	req, _ := http.NewRequest("GET", ui.base+"/env", nil)
	req.AddCookie(session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("framing headers: CSP %q, X-Frame-Options %q", csp, resp.Header.Get("X-Frame-Options"))
	}
	fctx, cancel := context.WithTimeout(ctx, hangGuard)
	defer cancel()
	blocked := chromedp.Events(fctx, network.LoadingFailed)
	do(t, ctx, chromedp.Navigate(evil+"/frame"))
	for ev, err := range blocked {
		if err != nil {
			t.Fatalf("waiting for the browser to refuse the frame: %v", err)
		}
		// The framed console is the one document the page loads from it.
		if ev.Type == network.ResourceTypeDocument {
			if ev.ErrorText != "net::ERR_BLOCKED_BY_RESPONSE" {
				t.Errorf("framed console: %s, want net::ERR_BLOCKED_BY_RESPONSE", ev.ErrorText)
			}
			break
		}
	}
}
