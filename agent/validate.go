package agent

import (
	"bytes"
	"strings"
)

const maxNameLen = 256

// validVarName reports whether name matches ^[A-Za-z_][A-Za-z0-9_]*$ and is at
// most 256 bytes (docs/design.md §1).
func validVarName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// validIdent reports whether s can name a user, project, group or workload:
// 1–128 bytes of letters, digits and . _ - @, not starting with . or -.
// Such names become parts of store keys and paths, so '/' and control bytes
// are never allowed.
func validIdent(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == '@':
		default:
			return false
		}
	}
	return true
}

// Reserved holds the reserved-name rules: exact names and prefixes (an entry
// ending in '*').
type Reserved struct {
	exact    map[string]bool
	prefixes []string
}

// DefaultReserved is docs/design.md §1's list.
var DefaultReserved = []string{"API_KEY", "MATERIAL_DIRECTORY", "PROJECT_ID", "HOPS_*", "HOPSWORKS_*", "HOPSFS_*", "ENVLET_*"}

// NewReserved builds the rules from a list such as DefaultReserved.
func NewReserved(list []string) Reserved {
	r := Reserved{exact: map[string]bool{}}
	for _, e := range list {
		if p, ok := strings.CutSuffix(e, "*"); ok {
			r.prefixes = append(r.prefixes, p)
		} else {
			r.exact[e] = true
		}
	}
	return r
}

// Has reports whether name is reserved.
func (r Reserved) Has(name string) bool {
	if r.exact[name] {
		return true
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// checkName applies the name rules; reserved names are refused for every
// layer a user can write.
func (a *Agent) checkName(name string) error {
	if !validVarName(name) {
		// The invalid name is not echoed: a mistyped NAME=value would
		// otherwise put a value into the error.
		return errorf(CodeInvalidName, "invalid variable name (%d bytes): must match ^[A-Za-z_][A-Za-z0-9_]*$ and be at most %d bytes", len(name), maxNameLen)
	}
	if a.reserved.Has(name) {
		return errorf(CodeReservedName, "variable name %q is reserved", name)
	}
	return nil
}

// checkValue applies the value rules. The message gives sizes, never content.
func (a *Agent) checkValue(name string, v []byte) error {
	if bytes.IndexByte(v, 0) >= 0 {
		return errorf(CodeInvalidValue, "value of %s contains a NUL byte", name)
	}
	if max := a.maxValueBytes(); len(v) > max {
		return errorf(CodeInvalidValue, "value of %s is %d bytes, over the limit of %d", name, len(v), max)
	}
	return nil
}

// masked reports whether a value must be shown as ******** (docs/design.md §1).
func masked(name string, secret bool) bool {
	if secret {
		return true
	}
	l := strings.ToLower(name)
	return strings.Contains(l, "key") || strings.Contains(l, "token") ||
		strings.Contains(l, "secret") || strings.Contains(l, "password")
}

const maskText = "********"
