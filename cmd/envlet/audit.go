package main

import (
	"net/http"

	"github.com/envlet/envlet/agent/api"
	"github.com/spf13/cobra"
)

func (a *app) auditCmd() *cobra.Command {
	cmd := group("audit", "Work with the agent's audit log (admins)")
	var valueStdin bool
	var file string
	hmacCmd := &cobra.Command{
		Use:   "hmac (--value-stdin | --file PATH)",
		Short: "Print the audit HMAC of a value, to grep the audit log for where it was written or served",
		Long: `Print the HMAC-SHA256 of a value under this agent's audit key: the same
hex string the audit log records as "hmac" for a write of that value and in
"hmacs" for a workload served it. --value-stdin reads the value from stdin
(one trailing newline is dropped, as for env set --value-stdin); --file PATH
takes a file's bytes base64-encoded, as a file secret stores them.
Admins only; the agent audits the request (without the value).`,
		Args: nArgs(0, 0),
		// A value typed on the command line by mistake must not be
		// echoed by a flag error.
		Annotations: map[string]string{valuesAnnotation: "true"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var value string
			switch {
			case valueStdin == cmd.Flags().Changed("file"):
				return usagef(cmd, "give exactly one of --value-stdin or --file")
			case valueStdin:
				v, err := a.value(cmd, &valueFlags{valueStdin: true}, args, 0)
				if err != nil {
					return err
				}
				value = *v
			default:
				v, err := a.secretFileValue(file)
				if err != nil {
					return err
				}
				value = v
			}
			var reply api.HMACReply
			if _, err := a.client().call(cmd.Context(), http.MethodPost, "/v1/audit/hmac", nil, api.HMACRequest{Value: value}, &reply); err != nil {
				return err
			}
			return writeString(a.stdout, reply.HMAC+"\n")
		},
	}
	hmacCmd.Flags().BoolVar(&valueStdin, "value-stdin", false, "read the value from stdin (one trailing newline is dropped)")
	hmacCmd.Flags().StringVar(&file, "file", "", "take the bytes of file `PATH` (- for stdin), base64-encoded as a file secret stores them")
	cmd.AddCommand(hmacCmd, a.auditListCmd())
	return cmd
}
