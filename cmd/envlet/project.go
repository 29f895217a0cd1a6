package main

import (
	"net/http"

	"github.com/spf13/cobra"
)

// project is a project as the API returns it.
type project struct {
	Name    string   `json:"name"`
	Owners  []string `json:"owners"`
	Members []string `json:"members"`
	Groups  []string `json:"groups"`
}

func (a *app) projectCmd() *cobra.Command {
	cmd := group("project", "Manage projects, their members, variables and groups")
	projPath := func(p string) (string, error) { return apiPath("/v1/projects/%s", "project", p) }

	// simple is a command whose whole job is one request with no output.
	simple := func(c *cobra.Command, method string, path func(args []string) (string, error), body func(args []string) any) *cobra.Command {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			p, err := path(args)
			if err != nil {
				return err
			}
			var in any
			if body != nil {
				in = body(args)
			}
			_, err = a.client().call(cmd.Context(), method, p, nil, in, nil)
			return err
		}
		return c
	}

	create := simple(&cobra.Command{
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
		func(args []string) any { return map[string]string{"name": args[0]} })

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List projects",
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ps []project
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/projects", nil, nil, &ps)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "NAME", "OWNERS", "MEMBERS", "GROUPS")
			for _, p := range ps {
				t.row(p.Name, joinOrDash(p.Owners), joinOrDash(p.Members), joinOrDash(p.Groups))
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
			var p project
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
			return t.flush()
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print the API's JSON object")

	del := simple(&cobra.Command{
		Use:   "delete P",
		Short: "Delete a project",
		Args:  nArgs(1, 1),
	}, http.MethodDelete, func(args []string) (string, error) { return projPath(args[0]) }, nil)

	var owner bool
	addMember := simple(&cobra.Command{
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
			return struct {
				User  string `json:"user"`
				Owner bool   `json:"owner,omitempty"`
			}{User: args[1], Owner: owner}
		})
	addMember.Flags().BoolVar(&owner, "owner", false, "make the user an owner of the project")

	removeMember := simple(&cobra.Command{
		Use:   "remove-member P USER",
		Short: "Remove a member from a project",
		Args:  nArgs(2, 2),
	}, http.MethodDelete, func(args []string) (string, error) {
		return apiPath("/v1/projects/%s/members/%s", "project", args[0], "USER", args[1])
	}, nil)

	groups := simple(&cobra.Command{
		Use:   "groups P [G1 G2 …]",
		Short: "Set a project's variable groups, in order (a later group wins); none clears them",
		Args:  nArgs(1, -1),
	}, http.MethodPut,
		func(args []string) (string, error) { return apiPath("/v1/projects/%s/groups", "project", args[0]) },
		func(args []string) any {
			g := append([]string{}, args[1:]...) // [] rather than null when clearing
			return map[string][]string{"groups": g}
		})

	cmd.AddCommand(create, list, show, del, addMember, removeMember, a.projectEnvCmd(), groups)
	return cmd
}

func (a *app) projectEnvCmd() *cobra.Command {
	cmd := group("env", "Manage a project's variables")

	var f valueFlags
	var fromSecret string
	set := &cobra.Command{
		Use:   "set P NAME (VALUE | --from-secret SECRET | --value-stdin)",
		Short: "Create or replace a project variable (idempotent)",
		Args:  nArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.value(cmd, &f, args, 2)
			if err != nil {
				return err
			}
			body := varBody{Value: v, Secret: f.secretFlag(cmd)}
			switch {
			case cmd.Flags().Changed("from-secret") && v != nil:
				return usagef(cmd, "give one of VALUE, --value-stdin or --from-secret")
			case cmd.Flags().Changed("from-secret"):
				if fromSecret == "" {
					return usagef(cmd, "--from-secret must not be empty")
				}
				body.FromSecret = fromSecret
			case v == nil:
				return usagef(cmd, "missing VALUE (or --value-stdin, --from-secret)")
			}
			p, err := apiPath("/v1/projects/%s/env/%s", "project", args[0], "NAME", args[1])
			if err != nil {
				return err
			}
			_, err = a.client().call(cmd.Context(), http.MethodPut, p, nil, body, nil)
			return err
		},
	}
	f.add(set)
	set.Flags().StringVar(&fromSecret, "from-secret", "", "take the value, per workload, from `SECRET` (the workload user's private secret, else the project's)")

	var reveal, asJSON bool
	list := &cobra.Command{
		Use:   "list P",
		Short: "List a project's variables as NAME=VALUE lines",
		Args:  nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := apiPath("/v1/projects/%s/env", "project", args[0])
			if err != nil {
				return err
			}
			var vars []variable
			raw, err := a.client().call(cmd.Context(), http.MethodGet, p, revealQuery(reveal), nil, &vars)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.stdout, raw)
			}
			return printVars(a.stdout, vars)
		},
	}
	list.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (those you may read)")
	list.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of {name,value,secret,masked}")

	del := &cobra.Command{
		Use:   "delete P NAME",
		Short: "Delete a project variable; ENV_VAR_NOT_FOUND if it does not exist",
		Args:  nArgs(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := apiPath("/v1/projects/%s/env/%s", "project", args[0], "NAME", args[1])
			if err != nil {
				return err
			}
			_, err = a.client().call(cmd.Context(), http.MethodDelete, p, nil, nil, nil)
			return err
		},
	}

	cmd.AddCommand(set, list, del)
	return cmd
}
