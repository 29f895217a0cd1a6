package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
)

// varBody is the request body of create, set and update.
type varBody struct {
	Value      *string `json:"value,omitempty"` // a pointer: "" is a value (it clears the name)
	FromSecret string  `json:"from_secret,omitempty"`
	Secret     *bool   `json:"secret,omitempty"` // sent only when --secret is given, so set/update keep the flag otherwise
}

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
	listPath := func() (string, error) { return apiPath("/v1/users/%s/env", "--user", user) }

	// writeVar is create and update: VALUE or --value-stdin is required.
	writeVar := func(use, short, method string) *cobra.Command {
		var f valueFlags
		c := &cobra.Command{
			Use:   use + " NAME VALUE",
			Short: short,
			Args:  nArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				v, err := a.value(cmd, &f, args, 1)
				if err != nil {
					return err
				}
				if v == nil {
					return usagef(cmd, "missing VALUE (or --value-stdin)")
				}
				p, err := varPath(args[0])
				if err != nil {
					return err
				}
				_, err = a.client().call(cmd.Context(), method, p, nil, varBody{Value: v, Secret: f.secretFlag(cmd)}, nil)
				return err
			},
		}
		f.add(c)
		return c
	}

	set := func() *cobra.Command {
		var f valueFlags
		var fromSecret string
		c := &cobra.Command{
			Use:   "set NAME (VALUE | --from-secret SECRET | --value-stdin)",
			Short: "Create or replace a variable (idempotent)",
			Args:  nArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				v, err := a.value(cmd, &f, args, 1)
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
				p, err := varPath(args[0])
				if err != nil {
					return err
				}
				_, err = a.client().call(cmd.Context(), http.MethodPut, p, nil, body, nil)
				return err
			},
		}
		f.add(c)
		c.Flags().StringVar(&fromSecret, "from-secret", "", "take the value, per workload, from `SECRET` (your private secret, else the workload's project's)")
		return c
	}

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
				var v variable
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

	listCmd := func() *cobra.Command {
		var reveal, asJSON bool
		c := &cobra.Command{
			Use:   "list",
			Short: "List variables as NAME=VALUE lines",
			Args:  nArgs(0, 0),
			RunE: func(cmd *cobra.Command, args []string) error {
				p, err := listPath()
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
		c.Flags().BoolVar(&reveal, "reveal", false, "print masked values in clear (those you may read)")
		c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON array of {name,value,secret,masked}")
		return c
	}

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a variable; ENV_VAR_NOT_FOUND if it does not exist",
		Args:  nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := varPath(args[0])
			if err != nil {
				return err
			}
			_, err = a.client().call(cmd.Context(), http.MethodDelete, p, nil, nil, nil)
			return err
		},
	}

	delAll := &cobra.Command{
		Use:   "delete-all",
		Short: "Delete every account variable of the user",
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := listPath()
			if err != nil {
				return err
			}
			var reply struct {
				Deleted int64 `json:"deleted"`
			}
			if _, err := a.client().call(cmd.Context(), http.MethodDelete, p, nil, nil, &reply); err != nil {
				return err
			}
			return writeString(a.stdout, fmt.Sprintf("deleted %d variables\n", reply.Deleted))
		},
	}

	cmd.AddCommand(
		writeVar("create", "Create a variable; ENV_VAR_ALREADY_EXISTS if it exists", http.MethodPost),
		set(),
		get(),
		listCmd(),
		writeVar("update", "Change an existing variable; ENV_VAR_NOT_FOUND if it does not exist", http.MethodPatch),
		del,
		delAll,
	)
	return cmd
}
