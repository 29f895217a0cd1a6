package main

import (
	"net/http"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

func (a *app) workloadUpdateCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "update ID FILE",
		Short: "Replace a workload's runtime, execution and mount from a JSON file (- for stdin)",
		Long: `Update a registered workload: FILE (- reads stdin) is the whole
registration document, as for register. runtime, execution and mount may
change; id, user, project and match must be what they are
(WORKLOAD_FIELD_IMMUTABLE): they say who the workload is, and a new
identity is a new registration. A running workload sees the change as any
other: 'workload list' shows it stale, --watch launchers restart or
signal, mounts are rewritten. Admins only; API registrations only (a
workloads.d file is edited in place).`,
		Args: nArgs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := apiPath("/v1/workloads/%s", "ID", args[0])
			if err != nil {
				return err
			}
			doc, err := a.readDoc(args[1])
			if err != nil {
				return err
			}
			data, err := a.client().do(cmd.Context(), http.MethodPut, path, nil, doc)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, data)
			}
			var reply api.Registered
			if err := decode(data, &reply); err != nil {
				return errorf(codeBadReply, "decode reply to PUT %s: %v", path, err)
			}
			return writeString(a.stdout, "updated "+display(reply.ID)+"\n")
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's reply ({\"id\", \"token_file\"?})")
	return c
}
