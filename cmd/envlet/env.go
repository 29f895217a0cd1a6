package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

// valueFlags are the flags of every command that writes a value.
type valueFlags struct {
	secret     bool
	valueStdin bool
}

func (f *valueFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.secret, "secret", false, "flag the variable secret: its value is masked in listings (--secret=false clears the flag)")
	cmd.Flags().BoolVar(&f.valueStdin, "value-stdin", false, "read VALUE from stdin (one trailing newline is dropped), keeping it out of shell history and ps")
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[valuesAnnotation] = "true"
}

// secretFlag is --secret when given on the command line, else nil.
func (f *valueFlags) secretFlag(cmd *cobra.Command) *bool {
	if !cmd.Flags().Changed("secret") {
		return nil
	}
	b := f.secret
	return &b
}

// value returns the VALUE argument at args[i], or stdin with --value-stdin,
// or nil when neither is given.
func (a *app) value(cmd *cobra.Command, f *valueFlags, args []string, i int) (*string, error) {
	if !f.valueStdin {
		if len(args) > i {
			return &args[i], nil
		}
		return nil, nil
	}
	if len(args) > i {
		return nil, usagef(cmd, "give VALUE or --value-stdin, not both")
	}
	b, err := io.ReadAll(io.LimitReader(a.stdin, maxBody+1))
	if err != nil {
		return nil, errorf(codeIO, "read value from stdin: %v", err)
	}
	if len(b) > maxBody {
		return nil, errorf("ENV_VAR_INVALID_VALUE", "value on stdin is larger than %d bytes", maxBody)
	}
	s := string(bytes.TrimSuffix(b, []byte("\n")))
	return &s, nil
}

// readFile reads file name, or stdin for "-", up to limit+1 bytes: more
// than limit says the file is too large. what names it in errors.
func (a *app) readFile(what, name string, limit int64) ([]byte, error) {
	r := a.stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, errorf(codeIO, "read %s: %v", what, err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, errorf(codeIO, "read %s %s: %v", what, name, err)
	}
	return b, nil
}

func revealQuery(reveal bool) url.Values {
	if !reveal {
		return nil
	}
	return url.Values{"reveal": {"1"}}
}

func (a *app) envCmd() *cobra.Command {
	cmd := group("env", "Manage account variables (your own, or --user's)")
	var user string
	cmd.PersistentFlags().StringVar(&user, "user", "me", "act on `USER`'s account variables (me: the calling user; others need admin)")
	varPath := func(name string) (string, error) {
		return apiPath("/v1/users/%s/env/%s", "--user", user, "NAME", name)
	}
	listPath := func([]string) (string, error) { return apiPath("/v1/users/%s/env", "--user", user) }
	namePath := func(args []string) (string, error) { return varPath(args[0]) }

	get := func() *cobra.Command {
		var reveal, asJSON bool
		c := &cobra.Command{
			Use:   "get NAME",
			Short: "Print a variable's value; nothing, and exit 0, when it does not exist",
			Args:  nArgs(1, 1),
			RunE: func(cmd *cobra.Command, args []string) error {
				p, err := varPath(args[0])
				if err != nil {
					return err
				}
				var v api.Variable
				raw, err := a.client().call(cmd.Context(), http.MethodGet, p, revealQuery(reveal), nil, &v)
				var ae *apiError
				if errors.As(err, &ae) && ae.Code == codeNotFound {
					return nil // as the SDK: a missing name is not an error for get
				}
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(a.stdout, raw)
				}
				if v.FromSecret != "" {
					fmt.Fprintf(a.stderr, "envlet: note: %s takes its value from secret %s when a workload starts\n", display(v.Name), display(v.FromSecret))
				} else if v.Masked {
					hint := "add --reveal to print its value"
					if reveal {
						hint = "the agent did not allow --reveal"
					}
					fmt.Fprintf(a.stderr, "envlet: note: %s is masked; %s\n", display(v.Name), hint)
				}
				return writeString(a.stdout, v.Value+"\n")
			},
		}
		c.Flags().BoolVar(&reveal, "reveal", false, "print a masked value in clear (if you may read it)")
		c.Flags().BoolVar(&asJSON, "json", false, "print the variable as the API's JSON object")
		return c
	}

	del := a.requestCmd(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a variable; ENV_VAR_NOT_FOUND if it does not exist",
		Args:  nArgs(1, 1),
	}, http.MethodDelete, namePath, nil)

	delAll := &cobra.Command{
		Use:   "delete-all",
		Short: "Delete every account variable of the user",
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := listPath(args)
			if err != nil {
				return err
			}
			var reply api.DeleteAllReply
			if _, err := a.client().call(cmd.Context(), http.MethodDelete, p, nil, nil, &reply); err != nil {
				return err
			}
			return writeString(a.stdout, fmt.Sprintf("deleted %d variables\n", reply.Deleted))
		},
	}

	cmd.AddCommand(
		a.writeVarCmd("create NAME VALUE", "Create a variable; ENV_VAR_ALREADY_EXISTS if it exists", http.MethodPost, 1, namePath),
		a.setVarCmd("set NAME", "Create or replace a variable (idempotent)",
			"take the value, per workload, from `SECRET` (your private secret, else the workload's project's)", 1, namePath),
		get(),
		a.listVarsCmd("list", "List variables as NAME=VALUE lines", 0, listPath),
		a.writeVarCmd("update NAME VALUE", "Change an existing variable; ENV_VAR_NOT_FOUND if it does not exist", http.MethodPatch, 1, namePath),
		del,
		delAll,
	)
	return cmd
}

// writeVarCmd is a command that writes a variable's value: args[:names]
// name it (path makes its API path of them) and args[names] is the VALUE,
// unless --value-stdin gives it.
func (a *app) writeVarCmd(use, short, method string, names int, path func(args []string) (string, error)) *cobra.Command {
	var f valueFlags
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nArgs(names, names+1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.value(cmd, &f, args, names)
			if err != nil {
				return err
			}
			if v == nil {
				return usagef(cmd, "missing VALUE (or --value-stdin)")
			}
			p, err := path(args)
			if err != nil {
				return err
			}
			_, err = a.client().call(cmd.Context(), method, p, nil, api.VariableWrite{Value: v, Secret: f.secretFlag(cmd)}, nil)
			return err
		},
	}
	f.add(c)
	return c
}

// setVarCmd is `env set` and `project env set`: writeVarCmd with PUT, and
// --from-secret (its help fromSecretUsage) as a third way to give the value.
func (a *app) setVarCmd(use, short, fromSecretUsage string, names int, path func(args []string) (string, error)) *cobra.Command {
	var f valueFlags
	var fromSecret string
	c := &cobra.Command{
		Use:   use + " (VALUE | --from-secret SECRET | --value-stdin)",
		Short: short,
		Args:  nArgs(names, names+1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := a.value(cmd, &f, args, names)
			if err != nil {
				return err
			}
			body := api.VariableWrite{Value: v, Secret: f.secretFlag(cmd)}
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
			p, err := path(args)
			if err != nil {
				return err
			}
			_, err = a.client().call(cmd.Context(), http.MethodPut, p, nil, body, nil)
			return err
		},
	}
	f.add(c)
	c.Flags().StringVar(&fromSecret, "from-secret", "", fromSecretUsage)
	return c
}

// listVarsCmd prints the variables at the API path made of its names
// arguments as NAME=VALUE lines.
func (a *app) listVarsCmd(use, short string, names int, path func(args []string) (string, error)) *cobra.Command {
	var reveal, asJSON bool
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nArgs(names, names),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := path(args)
			if err != nil {
				return err
			}
			var vars []api.Variable
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
	c.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (those you may read)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of {name,value,secret,masked,created_at,updated_at,updated_by}")
	return c
}
