package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

// maxSecretFile bounds what --file reads: the agent takes at most 9000
// base64 characters (6750 bytes), so a file much larger is refused here
// without sending it.
const maxSecretFile = 1 << 20

func (a *app) secretCmd() *cobra.Command {
	cmd := group("secret", "Manage secrets: your private ones, or --project P's")
	var user, proj string
	cmd.PersistentFlags().StringVar(&proj, "project", "", "act on project `P`'s secrets (members read and write them)")
	cmd.PersistentFlags().StringVar(&user, "user", "me", "read `USER`'s private secrets (admins; only the user writes them)")
	base := func(cmd *cobra.Command) (string, error) {
		if proj != "" && cmd.Flags().Changed("user") {
			return "", usagef(cmd, "give --user or --project, not both")
		}
		if proj != "" {
			return apiPath("/v1/projects/%s/secrets", "--project", proj)
		}
		return apiPath("/v1/users/%s/secrets", "--user", user)
	}
	secretPath := func(cmd *cobra.Command, name string) (string, error) {
		b, err := base(cmd)
		if err != nil {
			return "", err
		}
		n, err := segment("NAME", name)
		if err != nil {
			return "", err
		}
		return b + "/" + n, nil
	}

	writeCmd := func(use, short, method string) *cobra.Command {
		var valueStdin bool
		var file string
		c := &cobra.Command{
			Use:   use + " NAME (VALUE | --file PATH | --value-stdin)",
			Short: short,
			Long: short + `.
VALUE, --value-stdin (one trailing newline is dropped) or --file PATH (the
file's bytes, stored base64-encoded; - reads stdin as is). The stored value
is at most 9000 characters, so a file secret holds at most 6750 bytes.`,
			Args: nArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				given := 0
				for _, g := range []bool{len(args) > 1, valueStdin, cmd.Flags().Changed("file")} {
					if g {
						given++
					}
				}
				if given != 1 {
					return usagef(cmd, "give exactly one of VALUE, --value-stdin or --file")
				}
				body := api.SecretWrite{}
				switch {
				case len(args) > 1:
					body.Value = args[1]
				case valueStdin:
					v, err := a.value(cmd, &valueFlags{valueStdin: true}, args, 1)
					if err != nil {
						return err
					}
					body.Value = *v
				default:
					v, err := a.secretFileValue(file)
					if err != nil {
						return err
					}
					body.Value, body.File = v, true
				}
				p, err := secretPath(cmd, args[0])
				if err != nil {
					return err
				}
				_, err = a.client().call(cmd.Context(), method, p, nil, body, nil)
				return err
			},
		}
		c.Flags().BoolVar(&valueStdin, "value-stdin", false, "read VALUE from stdin (one trailing newline is dropped)")
		c.Flags().StringVar(&file, "file", "", "store the bytes of file `PATH` (- for stdin), base64-encoded")
		c.Annotations = map[string]string{valuesAnnotation: "true"}
		return c
	}

	var reveal, decodeBytes, getJSON bool
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a secret (masked unless --reveal); nothing, and exit 0, when it does not exist",
		Long: `Print a secret: ******** and a note on stderr, unless --reveal (the stored
value: base64 for a file secret) or --decode (the bytes exactly as stored
from the file, or a text secret's value with no newline added). Every
reveal is audited.`,
		Args: nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := secretPath(cmd, args[0])
			if err != nil {
				return err
			}
			var s api.Secret
			raw, err := a.client().call(cmd.Context(), http.MethodGet, p, revealQuery(reveal || decodeBytes), nil, &s)
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == codeNotFound {
				return nil // as env get: a missing name is not an error
			}
			if err != nil {
				return err
			}
			if getJSON {
				return printJSON(a.stdout, raw)
			}
			if s.Value == nil {
				return errorf(codeBadReply, "reply to GET %s has no value", p)
			}
			if s.Masked {
				hint := "add --reveal to print its value, or --decode for its bytes"
				if reveal || decodeBytes {
					hint = "the agent did not allow --reveal"
				}
				fmt.Fprintf(a.stderr, "envlet: note: secret %s is masked; %s\n", display(s.Name), hint)
				return writeString(a.stdout, *s.Value+"\n")
			}
			if !decodeBytes {
				return writeString(a.stdout, *s.Value+"\n")
			}
			if s.Kind != "file" {
				return writeString(a.stdout, *s.Value)
			}
			b, err := base64.StdEncoding.DecodeString(*s.Value)
			if err != nil {
				return errorf(codeBadReply, "file secret %s is not valid base64", display(s.Name))
			}
			defer clear(b)
			return write(a.stdout, b)
		},
	}
	get.Flags().BoolVar(&reveal, "reveal", false, "print the stored value in clear (base64 for a file secret)")
	get.Flags().BoolVar(&decodeBytes, "decode", false, "write the secret's bytes exactly: a file secret decoded, a text secret with no newline (implies --reveal)")
	get.Flags().BoolVar(&getJSON, "json", false, "print the API's JSON object {name,kind,size,value,masked}")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the secrets you can read (yours and your projects'): name, kind, size, visibility and creation date, never values",
		Long: `List secrets, never values. With no --project or --user: every secret you
can read as a user, your private ones and those of each project you are in,
with their visibility (private, or project P). --project P: only P's.
--user U: U's private secrets (admins).`,
		Args: nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("user") {
				p, err := base(cmd)
				if err != nil {
					return err
				}
				var ss []api.Secret
				raw, err := a.client().call(cmd.Context(), http.MethodGet, p, nil, nil, &ss)
				if err != nil {
					return err
				}
				if listJSON {
					return printJSON(a.stdout, raw)
				}
				t := newTable(a.stdout, "NAME", "KIND", "SIZE", "CREATED")
				for _, s := range ss {
					t.row(s.Name, s.Kind, strconv.Itoa(s.Size), orDash(s.CreatedAt))
				}
				return t.flush()
			}
			var q url.Values
			if proj != "" {
				if _, err := segment("--project", proj); err != nil {
					return err
				}
				q = url.Values{"project": {proj}}
			}
			var ss []api.SecretListed
			raw, err := a.client().call(cmd.Context(), http.MethodGet, "/v1/secrets", q, nil, &ss)
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(a.stdout, raw)
			}
			t := newTable(a.stdout, "NAME", "KIND", "SIZE", "VISIBILITY", "CREATED")
			for _, s := range ss {
				vis := s.Visibility
				if s.Project != "" {
					vis += " " + s.Project
				}
				t.row(s.Name, s.Kind, strconv.Itoa(s.Size), vis, orDash(s.CreatedAt))
			}
			return t.flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print the API's JSON array of {name,kind,size,visibility,project,created_at,updated_at,updated_by} ({name,kind,size,…dates} with --user)")

	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a secret; ENV_VAR_NOT_FOUND if it does not exist",
		Args:  nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := secretPath(cmd, args[0])
			if err != nil {
				return err
			}
			_, err = a.client().call(cmd.Context(), http.MethodDelete, p, nil, nil, nil)
			return err
		},
	}

	cmd.AddCommand(
		writeCmd("create", "Create a secret; ENV_VAR_ALREADY_EXISTS if it exists", http.MethodPost),
		writeCmd("set", "Create or replace a secret (idempotent)", http.MethodPut),
		get, list, del)
	return cmd
}

// secretFileValue is the value of a --file secret: the file's bytes (- is
// stdin), base64-encoded as a file secret stores them.
func (a *app) secretFileValue(path string) (string, error) {
	b, err := a.readFile("secret file", path, maxSecretFile)
	defer clear(b)
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFile {
		return "", errorf("SECRET_TOO_LARGE", "file %s is over %d bytes; a file secret holds at most 6750 bytes (9000 base64 characters)", path, maxSecretFile)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}
