// Command agentprof is envletd with Go profiles: the same agent (package
// agent, the flags of envletd), plus
//
//	-cpuprofile FILE   a CPU profile from start to stop
//	-memprofile FILE   a heap profile written on SIGUSR1 (after a GC)
//
// for `go tool pprof`. bench/benchrun uses perf on the real envletd for the
// figures; this is for finding out why.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/envlet/envlet/agent"
)

func main() { os.Exit(run()) }

func run() int {
	args := os.Args[1:]
	var cpu, mem string
	var rest []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-cpuprofile", "-memprofile":
			if i+1 == len(args) {
				fmt.Fprintln(os.Stderr, "agentprof:", args[i], "needs a file")
				return 2
			}
			if args[i] == "-cpuprofile" {
				cpu = args[i+1]
			} else {
				mem = args[i+1]
			}
			i++
		default:
			rest = append(rest, args[i])
		}
	}
	cfg, err := agent.LoadConfig(rest, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentprof:", err)
		return 2
	}
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			fmt.Fprintln(os.Stderr, "agentprof:", err)
			return 1
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	writeHeap := func() {
		if mem == "" {
			return
		}
		runtime.GC()
		if f, err := os.Create(mem); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, unix.SIGUSR1)
	go func() {
		for range usr1 {
			writeHeap()
		}
	}()
	log := hclog.New(&hclog.LoggerOptions{Name: "envletd", Output: os.Stderr, Level: hclog.LevelFromString(cfg.LogLevel)})
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()
	a := agent.New(cfg, log)
	if cfg.Dev {
		a.OnReady = func() {
			fmt.Printf("export ENVLET_SOCKET=%s\nexport ENVLET_ADMIN_SOCKET=%s\n", cfg.WorkloadSocket, cfg.AdminSocket)
		}
	}
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("agent stopped", "error", err)
		return 1
	}
	return 0
}
