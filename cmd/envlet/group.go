package main

import (
	"net/http"
	"strconv"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

func (a *app) groupCmd() *cobra.Command {
	cmd := group("group", "Manage organization variable groups (admins)")
	groupPath := func(g string) (string, error) { return apiPath("/v1/groups/%s", "group", g) }

	create := a.requestCmd(&cobra.Command{
		Use:   "create G",
		Short: "Create a variable group",
		Args:  nArgs(1, 1),
	}, http.MethodPost,
		func(args []string) (string, error) {
			if _, err := segment("group", args[0]); err != nil {
				return "", err
			}
			return "/v1/groups", nil
		},
		func(args []string) any { return api.GroupCreate{Name: args[0]} })

	varPath := func(args []string) (string, error) {
		return apiPath("/v1/groups/%s/env/%s", "group", args[0], "NAME", args[1])
	}
	set := a.writeVarCmd("set G NAME VALUE", "Create or replace a group variable (idempotent)", http.MethodPut, 2, varPath)
	unset := a.requestCmd(&cobra.Command{
		Use:   "unset G NAME",
		Short: "Delete a group variable; ENV_VAR_NOT_FOUND if it does not exist",
		Args:  nArgs(2, 2),
	}, http.MethodDelete, varPath, nil)

	assign := func(use, short, action string) *cobra.Command {
		var all bool
		c := a.requestCmd(&cobra.Command{
			Use:   use + " G (P… | --all-projects)",
			Short: short,
			Args:  nArgs(1, -1),
		}, http.MethodPost,
			func(args []string) (string, error) {
				if all == (len(args) > 1) {
					return "", errorf(codeUsage, "group %s: give projects P… or --all-projects, not both", use)
				}
				p, err := apiPath("/v1/groups/%s/"+action, "group", args[0])
				if err != nil {
					return "", err
				}
				for _, proj := range args[1:] {
					if _, err := segment("project", proj); err != nil {
						return "", err
					}
				}
				return p, nil
			},
			func(args []string) any { return api.GroupProjects{Projects: args[1:], AllProjects: all} })
		c.Flags().BoolVar(&all, "all-projects", false, "every project, present and future (below each project's own groups)")
		return c
	}

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List variable groups (admins: all; others: those of their projects)",
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var gs []api.Group
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/groups", nil, nil, &gs)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "NAME", "PROJECTS", "VARIABLES", "CREATED")
			for _, g := range gs {
				t.row(g.Name, groupProjects(g), strconv.Itoa(g.Count), orDash(g.CreatedAt))
			}
			return t.flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the API's JSON array of {name,projects,count,created_at,updated_at,updated_by}")

	var showJSON, reveal bool
	show := &cobra.Command{
		Use:   "show G",
		Short: "Show a group's projects and variables (NAME=VALUE lines)",
		Args:  nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := groupPath(args[0])
			if err != nil {
				return err
			}
			var g api.Group
			raw, err := a.client().call(cmd.Context(), http.MethodGet, p, revealQuery(reveal), nil, &g)
			if err != nil {
				return err
			}
			if showJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "name:", g.Name)
			t.row("projects:", groupProjects(g))
			t.row("created:", orDash(g.CreatedAt))
			t.row("updated:", updated(g.Dated))
			if err := t.flush(); err != nil {
				return err
			}
			return printVars(a.stdout, g.Variables)
		},
	}
	show.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (admins only; members see them masked)")
	show.Flags().BoolVar(&showJSON, "json", false, "print the API's JSON object {name,projects,count,variables}")

	del := a.requestCmd(&cobra.Command{
		Use:   "delete G",
		Short: "Delete a group and its variables, and remove it from every project",
		Args:  nArgs(1, 1),
	}, http.MethodDelete, func(args []string) (string, error) { return groupPath(args[0]) }, nil)

	cmd.AddCommand(create, set, unset,
		assign("assign", "Add a group at the end of each project's group order (--all-projects: below every project's own groups)", "assign"),
		assign("unassign", "Remove a group from projects (--all-projects: from every project's order)", "unassign"),
		list, show, del)
	return cmd
}

// groupProjects is a group's projects as list and show print them: "(all)"
// first for a group assigned to every project.
func groupProjects(g api.Group) string {
	if !g.AllProjects {
		return joinOrDash(g.Projects)
	}
	if len(g.Projects) == 0 {
		return "(all)"
	}
	return "(all)," + joinOrDash(g.Projects)
}
