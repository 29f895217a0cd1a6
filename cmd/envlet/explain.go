package main

import (
	"net/http"
	"net/url"

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
}

func (a *app) explainCmd() *cobra.Command {
	var workload, user, proj string
	var reveal, asJSON bool
	cmd := &cobra.Command{
		Use:   "explain (--workload ID | --user U --project P)",
		Short: "Show the resolved environment: every name, its layer and the layers it overrode",
		Long: `Show the environment a workload (or user U in project P) gets: for every
name its value (masked unless --reveal), the layer it came from (execution,
runtime, account, project, group:NAME, platform) and the layers it overrode.
A name cleared by an empty value at a higher layer shows as (cleared).`,
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
			case user == "" || proj == "":
				return usagef(cmd, "give --workload ID, or --user U and --project P")
			default:
				q.Set("user", user)
				q.Set("project", proj)
			}
			if reveal {
				q.Set("reveal", "1")
			}
			var es []explained
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/explain", q, nil, &es)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "NAME", "VALUE", "LAYER", "OVERRIDES")
			for _, e := range es {
				v := e.Value
				if e.Cleared {
					v = "(cleared)"
				}
				t.row(e.Name, v, e.Layer, joinOrDash(e.Overrides))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&workload, "workload", "", "explain the registered workload `ID`")
	cmd.Flags().StringVar(&user, "user", "", "explain for `USER` (with --project)")
	cmd.Flags().StringVar(&proj, "project", "", "explain for project `P` (with --user)")
	cmd.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (those you may read)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of {name,value,masked,layer,overrides,cleared}")
	return cmd
}
