// Command envletd is the envlet agent; see package agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/agent"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "key" {
		ctx, stop := signal.NotifyContext(ctx, unix.SIGINT, unix.SIGTERM)
		defer stop()
		return runKey(ctx, args[1:], stdout, stderr)
	}
	cfg, err := agent.LoadConfig(args, stderr)
	if errors.Is(err, flagHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "envletd:", err)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "envletd",
		Output:     stderr,
		JSONFormat: cfg.LogJSON,
		Level:      hclog.LevelFromString(cfg.LogLevel),
	})
	ctx, stop := signal.NotifyContext(ctx, unix.SIGINT, unix.SIGTERM)
	defer stop()
	a := agent.New(cfg, log)
	if cfg.Dev {
		// The lines a shell needs, before anything is served, so
		// `eval "$(envletd -dev | head -2)"`-style wrappers can wait on them.
		a.OnReady = func() {
			fmt.Fprintf(stdout, "export ENVLET_SOCKET=%s\nexport ENVLET_ADMIN_SOCKET=%s\n",
				shellQuote(cfg.WorkloadSocket), shellQuote(cfg.AdminSocket))
			if f, ok := stdout.(*os.File); ok {
				f.Sync()
			}
		}
	}
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("agent stopped", "error", err)
		return 1
	}
	return 0
}

var flagHelp = flag.ErrHelp

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
