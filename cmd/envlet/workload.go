package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

func (a *app) workloadCmd() *cobra.Command {
	cmd := group("workload", "Register, list and delete workloads")

	register := &cobra.Command{
		Use:   "register FILE",
		Short: "Register a workload from a JSON file (- for stdin)",
		Long: `Register a workload: the JSON document in FILE (- reads stdin) is sent
as is to the agent, the same document as in workloads.d/*.json.`,
		Args: nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := a.readDoc(args[0])
			if err != nil {
				return err
			}
			var reply api.Registered
			data, err := a.client().do(cmd.Context(), http.MethodPost, "/v1/workloads", nil, doc)
			if err != nil {
				return err
			}
			if err := decode(data, &reply); err != nil {
				return errorf(codeBadReply, "decode reply to POST /v1/workloads: %v", err)
			}
			out := fmt.Sprintf("registered %s\n", display(reply.ID))
			if reply.TokenFile != "" {
				out += fmt.Sprintf("token file: %s\n", display(reply.TokenFile))
			}
			return writeString(a.stdout, out)
		},
	}

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List registered workloads",
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ws []api.Workload
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/workloads", nil, nil, &ws)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "ID", "USER", "PROJECT", "SOURCE", "REVISION", "STALE", "TOKEN_FILE")
			for _, w := range ws {
				tf := w.TokenFile
				if tf == "" {
					tf = "-"
				}
				t.row(w.ID, w.User, w.Project, w.Source, strconv.FormatInt(w.Revision, 10), strconv.FormatBool(w.Stale), tf)
			}
			return t.flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of workloads")

	del := a.requestCmd(&cobra.Command{
		Use:   "delete ID",
		Short: "Deregister a workload",
		Args:  nArgs(1, 1),
	}, http.MethodDelete, func(args []string) (string, error) { return apiPath("/v1/workloads/%s", "ID", args[0]) }, nil)

	cmd.AddCommand(register, list, del, a.workloadUpdateCmd())
	return cmd
}

// readDoc reads a registration from a file, or stdin for "-". It checks
// only that the document is JSON within the agent's size limit; its
// contents (which may hold values) never appear in an error.
func (a *app) readDoc(name string) ([]byte, error) {
	doc, err := a.readFile("workload file", name, maxBody)
	if err != nil {
		return nil, err
	}
	if len(doc) > maxBody {
		return nil, errorf(codeInvalid, "workload file %s is larger than %d bytes", name, maxBody)
	}
	if !json.Valid(doc) {
		return nil, errorf(codeInvalid, "workload file %s is not valid JSON", name)
	}
	return doc, nil
}
