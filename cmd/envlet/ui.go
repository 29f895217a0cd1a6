package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/console"
	"github.com/spf13/cobra"
)

func (a *app) uiCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web console on a loopback address",
		Long: `ui serves the web console to this machine's browser: it prints a URL with a
one-time sign-in token, and runs until interrupted. Every page talks to the
agent as you, over the admin socket: the console can do exactly what you can.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := console.Listen(listen)
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			defer ln.Close()
			agent := a.client().c
			defer agent.Close()
			// Fail now rather than on the first page if the agent is not there.
			who, err := agent.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			srv, err := console.New(agent, ln.Addr().String())
			if err != nil {
				return &apiError{Code: api.CodeInternal, Message: err.Error()}
			}
			fmt.Fprintf(a.stdout, "envlet console for %s (press Ctrl-C to stop); open this URL once:\n%s\n", who.User, srv.LoginURL())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := srv.Serve(ctx, ln); err != nil {
				return &apiError{Code: api.CodeInternal, Message: err.Error()}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback `ADDRESS` to listen on (port 0: any free port)")
	return cmd
}
