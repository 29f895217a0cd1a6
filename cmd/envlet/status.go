package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// codeDegraded is `envlet status` finding the agent up but degraded; it
// exits 3, so a health check tells it from an unreachable agent (1).
const codeDegraded = "DEGRADED"

func (a *app) statusCmd() *cobra.Command {
	cmd := a.fieldsCmd("status", "Show the agent's backend, revision, staleness and counts", "/v1/status", checkDegraded,
		"backend", "revision", "stale_seconds", "users", "projects", "variables", "groups", "secrets", "workloads")
	cmd.Long = `Show the agent's backend, revision, staleness and counts.

Exit status: 0 the agent is healthy; 1 it cannot be reached or answered an
error; 2 bad usage; 3 it answered but is degraded: the backend is not
connected (the values served may be stale), records are sealed with a key
this node's key ring lacks, the backend snapshot cannot be written, the
audit log cannot be written (admin changes are refused), or values are not
locked in memory (they may reach swap). The status is
printed all the same; the reasons follow on stderr as
"envlet: DEGRADED: reason; reason".`
	return cmd
}

func (a *app) whoamiCmd() *cobra.Command {
	return a.fieldsCmd("whoami", "Show who the agent takes you for: user, uid, admin", "/v1/whoami", nil,
		"user", "uid", "admin")
}

// fieldsCmd is a command that GETs one object and prints it as "key: value"
// lines, the keys in order first (--json: the object itself). check, when
// not nil, judges the object once it is printed; its error is the command's.
func (a *app) fieldsCmd(use, short, path string, check func(raw []byte) error, order ...string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  nArgs(0, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.client().do(cmd.Context(), http.MethodGet, path, nil, nil)
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(a.stdout, raw)
			} else {
				err = printFields(a.stdout, raw, order...)
			}
			if err != nil || check == nil {
				return err
			}
			return check(raw)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON object")
	return cmd
}

// checkDegraded is a DEGRADED error when a status reply shows a degraded
// agent.
func checkDegraded(raw []byte) error {
	if why := degraded(raw); len(why) > 0 {
		return errorf(codeDegraded, "%s", strings.Join(why, "; "))
	}
	return nil
}

// degraded lists why a status reply shows a degraded agent; empty when it
// is healthy. A field the agent does not send is not held against it.
func degraded(raw []byte) []string {
	var st struct {
		Connected     *bool   `json:"connected"`
		StaleSeconds  int64   `json:"stale_seconds"`
		MemoryLocked  *bool   `json:"memory_locked"`
		MissingKeys   *string `json:"missing_keys"`
		SnapshotError *string `json:"snapshot_error"`
		AuditError    *string `json:"audit_error"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return []string{"the status reply cannot be read"}
	}
	var why []string
	if st.Connected != nil && !*st.Connected {
		if st.StaleSeconds < 0 {
			why = append(why, "backend not connected, data never known current")
		} else {
			why = append(why, "backend not connected, data stale for "+strconv.FormatInt(st.StaleSeconds, 10)+" s")
		}
	}
	if st.MissingKeys != nil && *st.MissingKeys != "" {
		why = append(why, "records sealed with keys this node lacks: "+oneLine(*st.MissingKeys))
	}
	if st.SnapshotError != nil && *st.SnapshotError != "" {
		why = append(why, "the backend snapshot cannot be written")
	}
	if st.AuditError != nil && *st.AuditError != "" {
		why = append(why, "the audit log cannot be written (admin changes are refused)")
	}
	if st.MemoryLocked != nil && !*st.MemoryLocked {
		why = append(why, "values not locked in memory (mlock failed)")
	}
	return why
}
