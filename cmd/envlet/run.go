package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/launcher"
	"github.com/spf13/cobra"
)

// launcherArg, as the first argument, makes envlet the launcher
// (envlet-exec) instead: `envlet run` starts itself that way as CMD's
// parent-to-be, so the merge, exec and --watch supervision are the
// launcher's own code, not a copy.
const launcherArg = "__envlet-exec"

// launchIfAsked runs the launcher and exits when envlet was started as
// one (see launcherArg).
func launchIfAsked() {
	if len(os.Args) > 1 && os.Args[1] == launcherArg {
		os.Exit(launcher.Main(os.Args[2:], os.Environ()))
	}
}

// maxEnvFile bounds --env-file.
const maxEnvFile = 4 << 20

func (a *app) runCmd() *cobra.Command {
	var (
		project  string
		sets     []string
		envFile  string
		watch    bool
		onChange string
		grace    string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "run [--project P] [-e NAME=VALUE]... [--env-file F] [--watch] -- CMD [ARGS...]",
		Short: "Run CMD as yourself with the environment a workload of yours in P gets",
		Long: `Run CMD as the calling user with exactly the environment a workload of
theirs in project P gets: platform defaults, P's groups, P's variables,
their account variables (they must be a member of P), and -e values as
the execution layer, highest (an empty value clears the name).

The agent registers the run for the caller's own uid with a token of its
own, for as long as this command runs: it shows in 'envlet workload list'
(source run) and is audited as a run. It is removed when CMD exits, and
also when this command is killed (the agent sees its connection close).
A user may hold max_runs_per_user runs at once (default 4;
RUN_LIMIT_EXCEEDED).

--env-file F reads NAME=VALUE lines (blank lines and # comments skipped,
an "export " prefix and one pair of surrounding quotes dropped); -e
values win over the file's. --watch, --on-change and --grace are
envlet-exec's: CMD is restarted, signalled or stopped when its
environment changes.

Exit status: CMD's own (128+N when signal N ended it); 125, 126, 127 as
envlet-exec when CMD could not be started; 1 when the agent refused the
run, 2 for bad usage.`,
		Example: `  envlet run --project fraud -- python train.py
  envlet run --project fraud -e LR=0.01 -e WANDB_MODE= -- ./train.sh
  envlet run --project fraud --watch --on-change signal:HUP -- ./server`,
		Args:        cobra.ArbitraryArgs,
		Annotations: map[string]string{valuesAnnotation: "true"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(cmd, "missing CMD (put it after --)")
			}
			if project == "" {
				project = os.Getenv("ENVLET_PROJECT")
			}
			if project == "" {
				return usagef(cmd, "a run needs --project P (or $ENVLET_PROJECT): the project whose environment CMD gets")
			}
			if !watch && (cmd.Flags().Changed("on-change") || cmd.Flags().Changed("grace")) {
				return usagef(cmd, "--on-change and --grace need --watch")
			}
			exe := map[string]string{}
			if envFile != "" {
				data, err := a.readFile("env file", envFile, maxEnvFile)
				if err != nil {
					return err
				}
				if len(data) > maxEnvFile {
					return errorf(codeInvalid, "env file %s is larger than %d bytes", envFile, maxEnvFile)
				}
				if exe, err = parseEnvFile(data); err != nil {
					return errorf(codeInvalid, "env file %s: %v", envFile, err)
				}
			}
			for i, kv := range sets {
				name, value, ok := strings.Cut(kv, "=")
				if !ok || name == "" {
					// Not echoed: it may be a value typed without its name.
					return usagef(cmd, "-e number %d is not NAME=VALUE", i+1)
				}
				exe[name] = value
			}
			return a.run(cmd, project, exe, args, runLaunch{watch: watch, onChange: onChange, grace: grace}, asJSON)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // CMD's own flags are CMD's
	f.StringVar(&project, "project", "", "the `P`roject whose environment CMD gets (default $ENVLET_PROJECT)")
	f.StringArrayVarP(&sets, "env", "e", nil, "set `NAME=VALUE` in the execution layer (highest; an empty VALUE clears NAME); repeatable")
	f.StringVar(&envFile, "env-file", "", "read execution variables from `FILE` (NAME=VALUE lines); -e wins")
	f.BoolVar(&watch, "watch", false, "stay CMD's parent and follow changes of its environment (as envlet-exec --watch)")
	f.StringVar(&onChange, "on-change", "", "with --watch: restart (default), exit, or signal:`NAME`")
	f.StringVar(&grace, "grace", "", "with --watch: from SIGTERM to SIGKILL (default 10s)")
	f.BoolVar(&asJSON, "json", false, "print the run's registration (id, user, project, uid, token_file, socket) as JSON on stderr before CMD starts")
	return cmd
}

// runLaunch is how CMD is launched: envlet-exec's flags.
type runLaunch struct {
	watch           bool
	onChange, grace string
}

// run holds a run open while CMD runs as a child (the launcher, which
// execs CMD or, with --watch, supervises it), then ends it.
func (a *app) run(cmd *cobra.Command, project string, exe map[string]string, argv []string, l runLaunch, asJSON bool) error {
	r, err := a.client().c.StartRun(cmd.Context(), api.RunRequest{Project: project, Execution: exe})
	clear(exe)
	if err != nil {
		return err
	}
	// From here on, the run ends with this function (or this process).
	defer r.End(10 * time.Second)
	st := r.Started
	if asJSON {
		b, _ := json.Marshal(st)
		if err := writeString(a.stderr, string(b)+"\n"); err != nil {
			return err
		}
	}
	socket := os.Getenv("ENVLET_SOCKET") // the caller's path to the agent, when it has one
	if socket == "" {
		socket = st.Socket
	}
	largs := []string{launcherArg, "--socket", socket, "--token-file", st.TokenFile}
	if l.watch {
		largs = append(largs, "--watch")
		if l.onChange != "" {
			largs = append(largs, "--on-change", l.onChange)
		}
		if l.grace != "" {
			largs = append(largs, "--grace", l.grace)
		}
	}
	largs = append(append(largs, "--"), argv...)
	self, err := os.Executable()
	if err != nil {
		return errorf(codeIO, "find the envlet binary to launch with: %v", err)
	}
	child := exec.Command(self, largs...)
	child.Args[0] = "envlet-exec"
	child.Env = os.Environ()
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	// This process dying ends the run; CMD is told so (SIGTERM) rather
	// than left running without its registration.
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}

	sigs := make(chan os.Signal, 8)
	// A terminal's ^C and ^\ reach CMD's process group themselves; the
	// others are passed on.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	// The parent-death signal is tied to the thread that forks: keep it
	// for this goroutine until CMD is gone, so no thread exit on the
	// runtime's part sends it early or loses it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := child.Start(); err != nil {
		return errorf(codeIO, "start the launcher: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- child.Wait() }()
	lost := r.Done()
	for {
		select {
		case s := <-sigs:
			if s != syscall.SIGINT && s != syscall.SIGQUIT {
				child.Process.Signal(s)
			}
		case <-lost:
			lost = nil
			fmt.Fprintf(a.stderr, "envlet: RUN_ENDED: the agent ended run %s (it stopped, or the connection broke); CMD runs on without its registration\n", st.ID)
		case err := <-waited:
			return childExit(err)
		}
	}
}

// childExit turns the launcher's end into this command's: its exit
// status, 128+N for signal N.
func childExit(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitStatus(128 + int(ws.Signal()))
		}
		return exitStatus(ee.ExitCode())
	}
	return errorf(codeIO, "wait for CMD: %v", err)
}

// exitStatus is CMD's exit status, passed on without a message.
type exitStatus int

func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// parseEnvFile reads NAME=VALUE lines: blank lines and lines starting
// with # are skipped, an "export " prefix is dropped, and a value wrapped
// in one pair of matching quotes loses them (nothing inside is
// unescaped). Errors give the line number, never the line.
func parseEnvFile(data []byte) (map[string]string, error) {
	out := map[string]string{}
	for n, line := range bytes.Split(data, []byte("\n")) {
		s := strings.TrimSuffix(string(line), "\r")
		t := strings.TrimSpace(s)
		if t == "" || t[0] == '#' {
			continue
		}
		t = strings.TrimPrefix(t, "export ")
		name, value, ok := strings.Cut(t, "=")
		name = strings.TrimSpace(name)
		if !ok || !validEnvName(name) {
			return nil, fmt.Errorf("line %d is not NAME=VALUE with a valid NAME", n+1)
		}
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		if strings.IndexByte(value, 0) >= 0 {
			return nil, fmt.Errorf("line %d: the value holds a NUL byte", n+1)
		}
		out[name] = value
	}
	return out, nil
}

// validEnvName is the agent's rule for a variable name.
func validEnvName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
