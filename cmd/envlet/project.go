package main

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

func (a *app) projectCmd() *cobra.Command {
	cmd := group("project", "Manage projects, their members, variables and groups")
	projPath := func(p string) (string, error) { return apiPath("/v1/projects/%s", "project", p) }

	create := a.requestCmd(&cobra.Command{
		Use:   "create P",
		Short: "Create a project",
		Args:  nArgs(1, 1),
	}, http.MethodPost,
		func(args []string) (string, error) {
			if _, err := segment("project", args[0]); err != nil {
				return "", err
			}
			return "/v1/projects", nil
		},
		func(args []string) any { return api.ProjectCreate{Name: args[0]} })

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List projects",
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ps []api.Project
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/projects", nil, nil, &ps)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "NAME", "OWNERS", "MEMBERS", "GROUPS", "CREATED")
			for _, p := range ps {
				t.row(p.Name, joinOrDash(p.Owners), joinOrDash(p.Members), joinOrDash(p.Groups), orDash(p.CreatedAt))
			}
			return t.flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the API's JSON array of projects")

	var showJSON bool
	show := &cobra.Command{
		Use:   "show P",
		Short: "Show a project's owners, members and groups",
		Args:  nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := projPath(args[0])
			if err != nil {
				return err
			}
			var p api.Project
			raw, err := a.client().call(cmd.Context(), http.MethodGet, path, nil, nil, &p)
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "name:", p.Name)
			t.row("owners:", joinOrDash(p.Owners))
			t.row("members:", joinOrDash(p.Members))
			t.row("groups:", joinOrDash(p.Groups))
			t.row("created:", orDash(p.CreatedAt))
			t.row("updated:", updated(p.Dated))
			return t.flush()
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the API's JSON object")

	del := a.requestCmd(&cobra.Command{
		Use:   "delete P",
		Short: "Delete a project",
		Args:  nArgs(1, 1),
	}, http.MethodDelete, func(args []string) (string, error) { return projPath(args[0]) }, nil)

	var owner bool
	addMember := a.requestCmd(&cobra.Command{
		Use:   "add-member P USER",
		Short: "Add a member to a project (--owner: as an owner)",
		Args:  nArgs(2, 2),
	}, http.MethodPost,
		func(args []string) (string, error) {
			if _, err := segment("USER", args[1]); err != nil {
				return "", err
			}
			return apiPath("/v1/projects/%s/members", "project", args[0])
		},
		func(args []string) any {
			return api.MemberAdd{User: args[1], Owner: owner}
		})
	addMember.Flags().BoolVar(&owner, "owner", false, "make the user an owner of the project")

	removeMember := a.requestCmd(&cobra.Command{
		Use:   "remove-member P USER",
		Short: "Remove a member from a project",
		Args:  nArgs(2, 2),
	}, http.MethodDelete, func(args []string) (string, error) {
		return apiPath("/v1/projects/%s/members/%s", "project", args[0], "USER", args[1])
	}, nil)

	leave := a.requestCmd(&cobra.Command{
		Use:   "leave P",
		Short: "Leave a project (an owner only while another owner remains); your account variables stay yours",
		Args:  nArgs(1, 1),
	}, http.MethodDelete, func(args []string) (string, error) {
		return apiPath("/v1/projects/%s/members/me", "project", args[0])
	}, nil)

	groups := a.requestCmd(&cobra.Command{
		Use:   "groups P [G1 G2 …]",
		Short: "Set a project's variable groups, in order (a later group wins); none clears them",
		Args:  nArgs(1, -1),
	}, http.MethodPut,
		func(args []string) (string, error) { return apiPath("/v1/projects/%s/groups", "project", args[0]) },
		func(args []string) any {
			g := append([]string{}, args[1:]...) // [] rather than null when clearing
			return api.ProjectGroups{Groups: g}
		})

	cmd.AddCommand(create, list, show, del, addMember, removeMember, leave, a.projectEnvCmd(), groups)
	return cmd
}

func (a *app) projectEnvCmd() *cobra.Command {
	cmd := group("env", "Manage a project's variables")
	varPath := func(args []string) (string, error) {
		return apiPath("/v1/projects/%s/env/%s", "project", args[0], "NAME", args[1])
	}
	cmd.AddCommand(
		a.setVarCmd("set P NAME", "Create or replace a project variable (idempotent)",
			"take the value, per workload, from `SECRET` (the workload user's private secret, else the project's)", 2, varPath),
		a.projectEnvListCmd(),
		a.requestCmd(&cobra.Command{
			Use:   "delete P NAME",
			Short: "Delete a project variable; ENV_VAR_NOT_FOUND if it does not exist",
			Args:  nArgs(2, 2),
		}, http.MethodDelete, varPath, nil))
	return cmd
}

// projectEnvListCmd is `project env list P`: the project's own variables,
// then, read-only, those its groups give, highest first, under a
// "# group:NAME" line each; --own only the project's own.
func (a *app) projectEnvListCmd() *cobra.Command {
	var reveal, asJSON, own bool
	c := &cobra.Command{
		Use:   "list P",
		Short: "List a project's variables (NAME=VALUE lines), then those its groups give",
		Long: `List a project's own variables as NAME=VALUE lines, then, read-only, the
variables its groups give, in the order they apply (the group that wins
first), each group's under a "# group:NAME (read-only)" line. Values are
masked as usual; --reveal shows the project's in clear to owners and
admins, the groups' to admins only. --own: only the project's own.`,
		Args: nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := apiPath("/v1/projects/%s/env", "project", args[0])
			if err != nil {
				return err
			}
			q := revealQuery(reveal)
			if !own {
				if q == nil {
					q = url.Values{}
				}
				q.Set("groups", "1")
			}
			var vars []api.Variable
			raw, err := a.client().call(cmd.Context(), http.MethodGet, p, q, nil, &vars)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			var b strings.Builder
			source := "project"
			for _, v := range vars {
				if v.Source != "" && v.Source != source {
					source = v.Source
					b.WriteString("# " + display(source) + " (read-only)\n")
				}
				b.WriteString(v.Name + "=" + display(v.Value) + "\n")
			}
			return writeString(a.stdout, b.String())
		},
	}
	c.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (those you may read)")
	c.Flags().BoolVar(&own, "own", false, "only the project's own variables, not its groups'")
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of {name,value,secret,masked,source}")
	return c
}
