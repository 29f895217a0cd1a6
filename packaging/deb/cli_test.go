package deb_test

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// need finds a tool the test runs: a skip without it, a failure in CI.
func need(t *testing.T, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found; CI must install %s", tool, pkg)
		}
		t.Skipf("%s not found (apt-get install %s)", tool, pkg)
	}
	return p
}

// renderMan is man's rendering of a packaged page, in plain ASCII. It fails
// the test on any warning man (groff) prints about the source.
func renderMan(t *testing.T, page string) string {
	t.Helper()
	cmd := exec.Command(need(t, "man", "man-db"), "--warnings", "-l", filepath.Join(built.tree, page))
	cmd.Env = append(os.Environ(), "LC_ALL=C", "MANWIDTH=200", "MAN_KEEP_FORMATTING=", "MANPAGER=cat", "PAGER=cat")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("man -l %s: %v\n%s", page, err, stderr.String())
	}
	// Overstrike bold and underline, should a man keep them.
	return regexp.MustCompile(".\b").ReplaceAllString(string(out), "")
}

// Every man page the package ships renders without a warning, has the
// sections a reader looks for, and describes every flag its binary takes.
func TestManPages(t *testing.T) {
	build(t)
	pages, _ := filepath.Glob(filepath.Join(built.tree, "usr/share/man/man*/*.gz"))
	if len(pages) < 4 {
		t.Fatalf("the package ships %d man pages", len(pages))
	}
	for _, p := range pages {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err == nil {
			_, err = io.Copy(io.Discard, zr)
		}
		f.Close()
		if err != nil {
			t.Errorf("%s is not gzip: %v", p, err)
		}
	}
	// envlet has a page for each command (the generator walks the tree).
	for _, c := range []string{"envlet", "envlet-status", "envlet-completion-bash", "envlet-env-set", "envlet-workload-delete"} {
		if _, err := os.Stat(filepath.Join(built.tree, "usr/share/man/man1", c+".1.gz")); err != nil {
			t.Errorf("no man page for %s", c)
		}
	}

	flagsOf := func(t *testing.T, re *regexp.Regexp, bin string, args ...string) []string {
		t.Helper()
		out, _ := exec.Command(filepath.Join(built.tree, "usr/bin", bin), append(args, "--help")...).CombinedOutput()
		var flags []string
		for _, m := range re.FindAllStringSubmatch(string(out), -1) {
			flags = append(flags, m[1])
		}
		if len(flags) < 3 {
			t.Fatalf("%s --help lists %d flags:\n%s", bin, len(flags), out)
		}
		return flags
	}
	for _, tt := range []struct {
		page, bin string
		args      []string       // before --help
		flag      *regexp.Regexp // a flag in --help's output
		sections  []string
	}{
		{"usr/share/man/man8/envletd.8.gz", "envletd", nil, regexp.MustCompile(`(?m)^  (-[a-z-]+)`),
			[]string{"NAME", "SYNOPSIS", "OPTIONS", "SIGNALS", "EXIT STATUS", "FILES"}},
		{"usr/share/man/man1/envlet-exec.1.gz", "envlet-exec", nil, regexp.MustCompile(`(?m)^  (?:-h, )?(--[a-z-]+)`),
			[]string{"NAME", "SYNOPSIS", "OPTIONS", "ENVIRONMENT", "EXIT STATUS"}},
		{"usr/share/man/man1/envlet-status.1.gz", "envlet", []string{"status"}, regexp.MustCompile(`(?m)^ +(?:-h, )?(--[a-z-]+)`),
			[]string{"NAME", "SYNOPSIS", "OPTIONS"}},
	} {
		t.Run(tt.bin, func(t *testing.T) {
			text := renderMan(t, tt.page)
			for _, s := range tt.sections {
				if !strings.Contains(text, "\n"+s+"\n") {
					t.Errorf("%s has no %s section", tt.page, s)
				}
			}
			for _, f := range flagsOf(t, tt.flag, tt.bin, tt.args...) {
				if !strings.Contains(text, f) {
					t.Errorf("%s does not describe %s, which %s --help lists", tt.page, f, tt.bin)
				}
			}
		})
	}
	// The exit codes of envlet status are documented where people look.
	if text := renderMan(t, "usr/share/man/man1/envlet-status.1.gz"); !strings.Contains(text, "3 it answered but is degraded") {
		t.Errorf("envlet-status(1) does not document exit status 3:\n%s", text)
	}
}

// The packaged bash completion, loaded into a real bash with Debian's
// bash-completion, completes commands, flags and the names a running agent
// (the packaged envletd, -dev) holds, and never a value.
func TestBashCompletion(t *testing.T) {
	build(t)
	bash := need(t, "bash", "bash")
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("bash-completion not installed; CI must install it")
		}
		t.Skip("bash-completion not installed (apt-get install bash-completion)")
	}
	bin := filepath.Join(built.tree, "usr/bin")
	dir, err := os.MkdirTemp("", "elc") // short: socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	agent := exec.Command(filepath.Join(bin, "envletd"), "-dev", "-dir", filepath.Join(dir, "d"))
	agent.Stderr = io.Discard
	stdout, _ := agent.StdoutPipe()
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() })
	// The exports come once the sockets are open: the agent is ready.
	exports := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(exports) < 2 && sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		exports[k] = v
	}
	admin := exports["ENVLET_ADMIN_SOCKET"]
	if admin == "" {
		t.Fatal("envletd -dev printed no ENVLET_ADMIN_SOCKET")
	}
	env := append(os.Environ(), "ENVLET_ADMIN_SOCKET="+admin, "PATH="+bin+":/usr/bin:/bin")

	// Names, and canary values that must never be offered.
	canaries := []string{"canary-acct-7f3a", "canary-proj-91bc", "canary-group-5d20", "canary-secret-e611"}
	reg := filepath.Join(dir, "w.json")
	os.WriteFile(reg, []byte(`{"id":"web-1","user":"root","project":"fraud","match":{"uid":4242}}`), 0o600)
	for _, args := range [][]string{
		{"project", "create", "fraud"},
		{"project", "create", "frontend"},
		{"project", "create", "ops"},
		{"env", "set", "API_TOKEN", canaries[0]},
		{"env", "set", "APP_MODE", "x"},
		{"project", "env", "set", "fraud", "DB_URL", canaries[1]},
		{"group", "create", "base"},
		{"group", "set", "base", "REGION", canaries[2]},
		{"secret", "set", "db_password", canaries[3]},
		{"workload", "register", reg},
	} {
		cmd := exec.Command(filepath.Join(bin, "envlet"), args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("envlet %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// complete runs bash's completion of line (the cursor at its end) as a
	// Tab would: the completion function the script registered for envlet,
	// with COMP_* set as bash sets them. compopt works only inside a
	// completion bash itself started, so it is a no-op here; it only
	// adjusts how candidates are shown.
	complete := func(line string) []string {
		t.Helper()
		script := `source ` + bashCompletion + `
source ` + filepath.Join(built.tree, "usr/share/bash-completion/completions/envlet") + `
compopt() { :; }
COMP_LINE=$1
COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
fn=$(complete -p envlet | sed -E 's/.* -F ([^ ]+) .*/\1/')
"$fn" envlet "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script, "bash", line)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
		}
		for _, c := range canaries {
			if strings.Contains(string(out), c) {
				t.Fatalf("completing %q printed the value %s:\n%s", line, c, out)
			}
		}
		got := strings.Fields(string(out))
		slices.Sort(got)
		return got
	}
	for _, tt := range []struct {
		line string
		want []string
	}{
		{"envlet ", []string{"audit", "completion", "env", "explain", "group", "help", "project", "run", "secret", "status", "ui", "whoami", "workload"}},
		{"envlet st", []string{"status"}},
		{"envlet status --", []string{"--help", "--json", "--socket"}},
		{"envlet env get ", []string{"API_TOKEN", "APP_MODE"}},
		{"envlet env get API", []string{"API_TOKEN"}},
		{"envlet project show fr", []string{"fraud", "frontend"}},
		{"envlet project env delete fraud ", []string{"DB_URL"}},
		{"envlet group set base ", []string{"REGION"}},
		{"envlet project groups fraud ", []string{"base"}},
		{"envlet group assign base ", []string{"fraud", "frontend", "ops"}},
		{"envlet secret get ", []string{"db_password"}},
		{"envlet env set APP --from-secret ", []string{"db_password"}},
		{"envlet explain --workload ", []string{"web-1"}},
		{"envlet workload delete ", []string{"web-1"}},
		{"envlet completion ", []string{"bash", "fish", "powershell", "zsh"}},
	} {
		if got := complete(tt.line); !slices.Equal(got, tt.want) {
			t.Errorf("complete %q: %q, want %q", tt.line, got, tt.want)
		}
	}
	// With no agent to ask, names complete to nothing, quickly and quietly.
	env = append(env, "ENVLET_ADMIN_SOCKET="+filepath.Join(dir, "none.sock"))
	if got := complete("envlet project show "); len(got) != 0 {
		t.Errorf("with no agent, completed %q", got)
	}
}
