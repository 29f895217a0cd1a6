package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

func (a *app) auditListCmd() *cobra.Command {
	var (
		since, until, user, project, group, action string
		limit                                      int
		asJSON                                     bool
	)
	c := &cobra.Command{
		Use:   "list [--since T] [--until T] [--user U] [--project P] [--group G] [--action A] [--limit N] [--json]",
		Short: "List audit records: who changed, revealed, was served or refused what",
		Long: `List the agent's audit records, oldest first: the newest --limit (1000)
that match every filter given. Times are RFC 3339 (2026-03-01T12:00:00Z)
or a duration back from now (24h). --user matches the caller, the
workload's user and the account scope; --project the workload's project,
the project's variables, secrets and groups, and explain in it; --group
the group's own records and every serve that merged it; --action one
action (serve, set, delete, reveal, refuse, register, update, run,
run-end, …). The agent reads its audit log and the files logrotate left
beside it (.1, .2.gz, …). Admins read every record; a project owner the
records of the projects they own, without HMACs. No value is ever in a
record.`,
		Args: nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"since": since, "until": until, "user": user, "project": project, "group": group, "action": action} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if cmd.Flags().Changed("limit") {
				q.Set("limit", strconv.Itoa(limit))
			}
			var list api.AuditList
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/audit", q, nil, &list)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "TIME", "ACTION", "BY", "WORKLOAD", "FOR", "PROJECT", "GROUPS", "SCOPE", "NAME", "CODE")
			for _, r := range list.Records {
				t.row(r.Time, r.Action, dash(r.User), dash(r.Workload), dash(r.WorkloadUser), dash(r.Project),
					joinOrDash(r.Groups), dash(r.Scope), dash(r.Name), dash(r.Code))
			}
			if err := t.flush(); err != nil {
				return err
			}
			if list.Truncated {
				return writeString(a.stderr, fmt.Sprintf("envlet: more records match than the %d shown (the newest); narrow the query or raise --limit\n", len(list.Records)))
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&since, "since", "", "records at or after `T` (RFC 3339, or a duration back from now: 24h)")
	f.StringVar(&until, "until", "", "records at or before `T`")
	f.StringVar(&user, "user", "", "records of user `U` (caller, workload's user, or account)")
	f.StringVar(&project, "project", "", "records of project `P`")
	f.StringVar(&group, "group", "", "records of group `G`, and serves that merged it")
	f.StringVar(&action, "action", "", "records of one action `A` (serve, set, run, refuse, …)")
	f.IntVar(&limit, "limit", 1000, "at most `N` records, the newest (1 to 100000)")
	f.BoolVar(&asJSON, "json", false, "print the API's JSON: {records, truncated, files}")
	return c
}

func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
