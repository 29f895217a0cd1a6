package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	launchIfAsked() // envlet run's launcher (run.go)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code: 0 done, 1 the
// command failed (agent error, agent unreachable, local I/O), 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIO(ctx, args, os.Stdin, stdout, stderr)
}

// runIO is run with stdin given, for --value-stdin and `workload register -`.
func runIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if args == nil {
		args = []string{} // nil makes cobra read os.Args
	}
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var status exitStatus
	if errors.As(err, &status) {
		return int(status) // envlet run: CMD's own status, its own messages
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		// Only cobra itself returns other errors, and all of them are about
		// the command line.
		ae = &apiError{Code: codeUsage, Message: oneLine(err.Error())}
	}
	fmt.Fprintf(stderr, "envlet: %s: %s\n", ae.Code, ae.Message)
	switch ae.Code {
	case codeUsage:
		return 2
	case codeDegraded: // status.go
		return 3
	}
	return 1
}

// app is what every command shares: the streams and the --socket flag.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	socket         string
}

// client connects to --socket, else $ENVLET_ADMIN_SOCKET, else the default.
func (a *app) client() *client {
	s := a.socket
	if s == "" {
		s = os.Getenv("ENVLET_ADMIN_SOCKET")
	}
	if s == "" {
		s = defaultSocket
	}
	return newClient(s)
}

func (a *app) rootCmd() *cobra.Command {
	root := group("envlet", "Manage the variables envletd serves to workloads")
	root.Long = `envlet manages the environment variables and secrets that envletd serves
to workloads, over the agent's admin socket.

Exit status: 0 done; 1 the command failed ("envlet: CODE: message" on
stderr); 2 bad usage ("envlet: USAGE: message"); 3 envlet status found the
agent degraded. Shell completion: envlet completion bash|zsh|fish.`
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.PersistentFlags().StringVar(&a.socket, "socket", "",
		"admin socket `PATH` (default $ENVLET_ADMIN_SOCKET, else "+defaultSocket+")")
	root.SetFlagErrorFunc(flagError)
	// Groups run only to report a missing or unknown command; their help
	// should not offer "envlet env [flags]" as a way to call them.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.AddCommand(a.envCmd(), a.projectCmd(), a.groupCmd(), a.secretCmd(), a.workloadCmd(), a.explainCmd(),
		a.statusCmd(), a.whoamiCmd(), a.auditCmd(), a.uiCmd(), a.runCmd())
	a.addCompletion(root) // completion.go
	return root
}

// valuesAnnotation marks commands that take a VALUE argument: their flag
// errors must not repeat the offending argument, since a value that starts
// with "-" is parsed as a flag and would otherwise be printed.
const valuesAnnotation = "envlet.values"

func flagError(cmd *cobra.Command, err error) error {
	if cmd.Annotations[valuesAnnotation] != "" {
		return usagef(cmd, "bad flag, not shown as it may be a value (a VALUE that starts with '-' goes after '--'); see '%s --help'",
			cmd.CommandPath())
	}
	return usagef(cmd, "%v", err)
}

// usagef is a USAGE error prefixed with the command's path below the root.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if p := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()); p != "" {
		msg = strings.TrimSpace(p) + ": " + msg
	}
	return &apiError{Code: codeUsage, Message: msg}
}

// group is a command that only holds subcommands. Called without one, or
// with an unknown one, it fails with USAGE (cobra would print help and exit 0).
func group(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:                        use,
		Short:                      short,
		Args:                       cobra.ArbitraryArgs,
		SuggestionsMinimumDistance: 2,
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() && c.Name() != "help" {
					names = append(names, c.Name())
				}
			}
			if len(args) == 0 {
				return usagef(cmd, "missing command, one of: %s", strings.Join(names, ", "))
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return usagef(cmd, "%s (one of: %s)", msg, strings.Join(names, ", "))
		},
	}
}

// nArgs accepts between min and max positional arguments (max < 0: no limit).
func nArgs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= min && (max < 0 || len(args) <= max) {
			return nil
		}
		want := strings.TrimSpace(strings.TrimPrefix(cmd.Use, cmd.Name()))
		if want == "" {
			want = "no arguments"
		}
		return usagef(cmd, "got %d argument(s), want %s", len(args), want)
	}
}

// requestCmd makes c a command whose whole job is one request with no
// output: path, and body when not nil, are made of the arguments.
func (a *app) requestCmd(c *cobra.Command, method string, path func(args []string) (string, error), body func(args []string) any) *cobra.Command {
	c.RunE = func(cmd *cobra.Command, args []string) error {
		p, err := path(args)
		if err != nil {
			return err
		}
		var in any
		if body != nil {
			in = body(args)
		}
		_, err = a.client().call(cmd.Context(), method, p, nil, in, nil)
		return err
	}
	return c
}
