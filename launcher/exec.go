package launcher

import (
	"strings"

	"github.com/envlet/envlet/agent/wire"
	"golang.org/x/sys/unix"
)

// defaultPath is where a program is looked for when the merged environment
// has no PATH, as execvp(3) in glibc does.
const defaultPath = "/bin:/usr/bin"

// merge applies entries, in order, to environ less every ENVLET_* variable
// (the launcher's controls, which the program must not see). A name keeps
// the position it had; a new name goes to the end, in the order it was set,
// so the result is stable from run to run. A set or unset also drops any
// duplicate of the name, so the program cannot read a stale copy.
func merge(environ []string, entries []wire.Entry) []string {
	env := make([]string, 0, len(environ)+len(entries))
	at := make(map[string]int, len(environ)+len(entries)) // name -> index in env
	dups := false                                         // environ repeats a name
	for _, kv := range environ {
		if kv == "" || strings.HasPrefix(kv, "ENVLET_") {
			continue
		}
		if name, _, ok := strings.Cut(kv, "="); ok {
			if _, seen := at[name]; seen {
				dups = true
			} else {
				at[name] = len(env)
			}
		}
		env = append(env, kv)
	}
	dropped := false
	for _, e := range entries {
		i, seen := at[e.Name]
		if seen && dups {
			// Clear later copies of the name: only the first survives a
			// set, none an unset.
			for j := i + 1; j < len(env); j++ {
				if hasName(env[j], e.Name) {
					env[j], dropped = "", true
				}
			}
		}
		switch {
		case e.Unset && seen:
			env[i], dropped = "", true
			delete(at, e.Name)
		case e.Unset:
		case seen:
			env[i] = e.Name + "=" + string(e.Value)
		default:
			at[e.Name] = len(env)
			env = append(env, e.Name+"="+string(e.Value))
		}
	}
	if !dropped {
		return env
	}
	out := env[:0]
	for _, kv := range env {
		if kv != "" {
			out = append(out, kv)
		}
	}
	return out
}

func hasName(kv, name string) bool {
	return len(kv) > len(name) && kv[len(name)] == '=' && kv[:len(name)] == name
}

// execProgram replaces the process with argv[0], looked up on the PATH of
// env; it returns only on failure (see findAndRun).
func execProgram(argv []string, env []string) *failure {
	return findAndRun(argv, env, func(path string) error { return unix.Exec(path, argv, env) })
}

// findAndRun calls run with argv[0], or with each candidate on the PATH of
// env unless argv[0] holds a '/', as execvp(3) searches: a candidate that
// does not exist is skipped, one that exists but is refused (EACCES) is
// remembered while the search goes on, and any other failure ends the
// search. run execs in place (execProgram) or starts a child (the
// supervisor); it returns nil once the program runs. findAndRun returns
// nil then, and otherwise 127 when no candidate exists, 126 for anything
// else. Messages name the program as given, never the PATH, which is a
// value.
func findAndRun(argv []string, env []string, run func(path string) error) *failure {
	prog := argv[0]
	if prog == "" {
		return &failure{code: codeNotFound, msg: "empty PROGRAM name", exit: exitNotFound}
	}
	if strings.Contains(prog, "/") {
		if err := run(prog); err != nil {
			return execFailure(prog, err)
		}
		return nil
	}
	path, ok := "", false
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			path, ok = kv[len("PATH="):], true
			break
		}
	}
	if !ok {
		path = defaultPath
	}
	var denied error
	for dir := range strings.SplitSeq(path, ":") {
		if dir == "" {
			dir = "." // an empty PATH element is the working directory
		}
		err := run(dir + "/" + prog)
		switch err {
		case nil:
			return nil
		case unix.ENOENT, unix.ENOTDIR, unix.ENAMETOOLONG, unix.ELOOP, unix.ESTALE, unix.ENODEV, unix.ETIMEDOUT:
			continue
		case unix.EACCES:
			denied = err
			continue
		}
		return execFailure(prog, err)
	}
	if denied != nil {
		return execFailure(prog, denied)
	}
	return &failure{code: codeNotFound, msg: prog + ": not found on PATH", exit: exitNotFound}
}

// execFailure maps an exec error to the exit code of env(1): 127 when the
// file (or its interpreter) does not exist, 126 for anything else.
func execFailure(prog string, err error) *failure {
	if err == unix.ENOENT {
		return &failure{code: codeNotFound, msg: prog + ": " + err.Error(), exit: exitNotFound}
	}
	return &failure{code: codeNotExecutable, msg: prog + ": " + err.Error(), exit: exitCannotRun}
}
