package main

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/envlet/envlet/agent/api"

	"github.com/spf13/cobra"
)

// explained is one name of `GET /v1/explain`.
type explained struct {
	Name      string   `json:"name"`
	Value     string   `json:"value"`
	Masked    bool     `json:"masked"`
	Layer     string   `json:"layer"`
	Overrides []string `json:"overrides"`
	Cleared   bool     `json:"cleared"`
	// SecretScope is whose secret a variable set --from-secret took;
	// LeftOut, why a layer's variable is not served (docs/concepts.md, "Whose secret
	// a reference reaches", "Protected names").
	SecretScope string `json:"secret_scope"`
	LeftOut     string `json:"left_out"`
}

func (a *app) explainCmd() *cobra.Command {
	var workload, user, proj string
	var sets []string
	var reveal, asJSON bool
	cmd := &cobra.Command{
		Use:   "explain (--workload ID | [--user U] --project P [-e NAME=VALUE]…)",
		Short: "Show the resolved environment: every name, its layer and the layers it overrode",
		Long: `Show the environment a workload (or user U in project P) gets: for every
name its value (masked unless --reveal), the layer it came from (execution,
runtime, account, project, group:NAME, platform) and the layers it overrode.
A name cleared by an empty value at a higher layer shows as (cleared).
A variable set --from-secret shows whose secret it took (secret:user:U
or secret:project:P). A layer's variable that is not served shows as
(left out: why), before the name's winner: its secret is not one that
layer reaches (the project and group layers reach only the project's
secrets, never a user's private ones), or its name is protected.
--project P without --user previews what a new workload of yours in P
would start with (as envlet run would give it), -e NAME=VALUE adding a
tentative execution-layer variable (an empty VALUE clears NAME); nothing
is registered.`,
		Args: nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			byWorkload := cmd.Flags().Changed("workload")
			byUser := cmd.Flags().Changed("user") || cmd.Flags().Changed("project")
			switch {
			case byWorkload && byUser:
				return usagef(cmd, "give --workload, or --user and --project, not both")
			case byWorkload:
				if workload == "" {
					return usagef(cmd, "--workload must not be empty")
				}
				q.Set("workload", workload)
			case proj == "":
				return usagef(cmd, "give --workload ID, or --project P (and --user U)")
			case user != "" && len(sets) == 0:
				q.Set("user", user)
				q.Set("project", proj)
			}
			if byWorkload && len(sets) > 0 {
				return usagef(cmd, "-e previews a new workload: give it with --project P, not --workload")
			}
			if reveal {
				q.Set("reveal", "1")
			}
			var es []explained
			var raw []byte
			var err error
			if !byWorkload && (user == "" || len(sets) > 0) {
				preview := api.ExplainPreview{User: user, Project: proj, Execution: map[string]string{}}
				for i, kv := range sets {
					name, value, ok := strings.Cut(kv, "=")
					if !ok || name == "" {
						// Not echoed: it may be a value typed without its name.
						return usagef(cmd, "-e number %d is not NAME=VALUE", i+1)
					}
					preview.Execution[name] = value
				}
				raw, err = a.client().call(cmd.Context(), http.MethodPost, "/v1/explain", q, preview, &es)
				clear(preview.Execution)
			} else {
				raw, err = a.client().call(cmd.Context(), http.MethodGet, "/v1/explain", q, nil, &es)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "NAME", "VALUE", "LAYER", "OVERRIDES")
			for _, e := range es {
				v := e.Value
				switch {
				case e.LeftOut != "":
					v = "(left out: " + e.LeftOut + ")"
				case e.Cleared:
					v = "(cleared)"
				case e.SecretScope != "":
					v += " (" + e.SecretScope + ")"
				}
				t.row(e.Name, v, e.Layer, joinOrDash(e.Overrides))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&workload, "workload", "", "explain the registered workload `ID`")
	cmd.Flags().StringVar(&user, "user", "", "explain for `USER` (with --project)")
	cmd.Flags().StringVar(&proj, "project", "", "explain for project `P` (alone: preview a new workload of yours in P)")
	cmd.Flags().StringArrayVarP(&sets, "env", "e", nil, "with --project: preview with `NAME=VALUE` in the execution layer (an empty VALUE clears NAME); repeatable")
	cmd.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (those you may read)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of {name,value,masked,layer,overrides,cleared,secret_scope,left_out}")
	return cmd
}
