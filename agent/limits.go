package agent

// Limits bound every collection a non-admin can grow (issue 11 §2), so no
// user fills the agent's locked memory, the store or the mounts' tmpfs:
//
//   - private secrets per user (anyone may write their own);
//   - a project's secrets (any member writes them) and variables (owners);
//   - the bytes of values a scope holds: a user's account variables and
//     private secrets together, a project's variables and secrets together;
//   - the bytes one mount's version may hold (every project secret is
//     copied into every mounted workload of the project).
//
// A write past a count or byte limit is refused with SECRET_LIMIT_EXCEEDED
// (secrets) or ENV_VAR_LIMIT_EXCEEDED (variables) and a message that gives
// the limit and its setting, never a value; a change that does not grow
// (an update to a smaller value, a delete) always goes through. A mount
// version over mount_bytes_limit is not written: the last one stays, and
// the log names the workload, the size and the limit.
//
// account_var_limit (config.go) is the older count limit on account
// variables. Groups, group variables, projects and registrations are
// written by admins only and have no limit (README, "Limits").
type Limits struct {
	PrivateSecrets int // private_secret_limit
	ProjectSecrets int // project_secret_limit
	ProjectVars    int // project_var_limit
	ScopeBytes     int // scope_bytes_limit
	MountBytes     int // mount_bytes_limit
}

// DefaultLimits: room for what a person or a project keeps by hand (a
// hundred secrets, the 64 account variables of account_var_limit), far
// from what fills a node: a user at every limit holds 1 MiB.
var DefaultLimits = Limits{
	PrivateSecrets: 100,
	ProjectSecrets: 200,
	ProjectVars:    500,
	ScopeBytes:     1 << 20,
	MountBytes:     4 << 20,
}

// limits returns the limits in force (a reload may change them).
func (a *Agent) limits() Limits {
	if l := a.liveLimits.Load(); l != nil {
		return *l
	}
	return a.cfg.Limits
}

// setBytes is the bytes of the values of a set.
func (s varSet) setBytes() int {
	n := 0
	for _, v := range s {
		n += len(v.value())
	}
	return n
}

// scopeBytes is what a user's scope (account variables and private
// secrets) or a project's (variables and secrets) holds. Called with a.mu
// held.
func (m *model) scopeBytes(user, project string) int {
	if project != "" {
		n := m.projSecrets[project].setBytes()
		if p := m.projects[project]; p != nil {
			n += p.vars.setBytes()
		}
		return n
	}
	n := m.userSecrets[user].setBytes()
	if u := m.users[user]; u != nil {
		n += u.vars.setBytes()
	}
	return n
}

// checkGrowth refuses a write that would take a scope's count of a kind
// over countLimit (a new name: old == nil) or its bytes over
// scope_bytes_limit. code is the refusal's code, what names the
// collection ("private secrets of alice"), setting the count's setting.
// Called with a.mu held.
func (a *Agent) checkGrowth(code, what, setting string, count, countLimit int, old *variable, scopeBytes, newLen int) error {
	if old == nil && count >= countLimit {
		return errorf(code, "%s: %d already, the limit (%s = %d)", what, count, setting, countLimit)
	}
	oldLen := 0
	if old != nil {
		oldLen = len(old.value())
	}
	lim := a.limits().ScopeBytes
	if after := scopeBytes - oldLen + newLen; newLen > oldLen && after > lim {
		return errorf(code, "%s: the scope would hold %d bytes, over the limit of %d (scope_bytes_limit)", what, after, lim)
	}
	return nil
}
