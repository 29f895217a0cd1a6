package main

import (
	"net/http"

	"github.com/spf13/cobra"
)

func (a *app) statusCmd() *cobra.Command {
	return a.fieldsCmd("status", "Show the agent's backend, revision, staleness and counts", "/v1/status",
		"backend", "revision", "stale_seconds", "users", "projects", "variables", "groups", "secrets", "workloads")
}

func (a *app) whoamiCmd() *cobra.Command {
	return a.fieldsCmd("whoami", "Show who the agent takes you for: user, uid, admin", "/v1/whoami",
		"user", "uid", "admin")
}

// fieldsCmd is a command that GETs one object and prints it as "key: value"
// lines, the keys in order first (--json: the object itself).
func (a *app) fieldsCmd(use, short, path string, order ...string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.client().do(cmd.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			return printFields(a.stdout, raw, order...)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON object")
	return cmd
}
