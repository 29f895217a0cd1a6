package agent

// Protected names (issue 11 §1): variables that make a program load or run
// code chosen by whoever sets them. The project layer is written by the
// project's owners, the group layers by admins: people other than the
// workload's user. Had they such a name, an owner could run code of theirs
// inside a member's workload, and read what it holds (its private
// secrets, its account variables). So the project and group layers may
// not set a protected name: a write is refused (ENV_VAR_PROTECTED_NAME),
// and one already stored (under a config that protected less, or written
// by another agent of a shared store) is left out when served, and
// explain says so. The layers the workload's own side writes may set
// them: the user's account layer, the registration (runtime, execution:
// admins and root, per workload) and the platform layer ([defaults]:
// root, in envletd.conf).
//
// The default, and why each is there (README, "Protected names"):
//
//   - the dynamic loader: LD_* (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT
//     load shared objects into every dynamically linked program), and
//     GCONV_PATH (glibc's iconv loads modules from it);
//   - PATH, HOME and XDG_CONFIG_HOME: which program a name runs, and where
//     shells, Python (user site-packages, .pth files), git (hooks, config)
//     and most tools read start-up files and configuration;
//   - shells: BASH_ENV (sourced by every non-interactive bash), ENV (sh,
//     dash, ksh, bash in POSIX mode), SHELLOPTS and BASHOPTS (xtrace, with
//     PS4, runs a command substitution at every line), PS4,
//     PROMPT_COMMAND;
//   - language start-up hooks and module paths: PYTHONSTARTUP,
//     PYTHONPATH, PYTHONHOME, PYTHONUSERBASE, PYTHONBREAKPOINT,
//     PYTHONPYCACHEPREFIX (cached bytecode is loaded as code); PERL5OPT,
//     PERL5LIB, PERLLIB, PERL5DB; NODE_OPTIONS (--require), NODE_PATH;
//     RUBYOPT, RUBYLIB; JAVA_TOOL_OPTIONS, JDK_JAVA_OPTIONS, _JAVA_OPTIONS
//     (-javaagent), CLASSPATH; LUA_INIT*, LUA_PATH*, LUA_CPATH*; PHPRC,
//     PHP_INI_SCAN_DIR (auto_prepend_file);
//   - libraries that load modules named in their config: OPENSSL_CONF,
//     OPENSSL_ENGINES, OPENSSL_MODULES;
//   - programs that tools run: GIT_* (GIT_SSH_COMMAND, GIT_CONFIG_*,
//     GIT_EXEC_PATH, …), SSH_ASKPASS, LESSOPEN, LESSCLOSE, PAGER, EDITOR,
//     VISUAL.
//
// Not protected: names that tune code without choosing any (TZ, LANG,
// PYTHONUNBUFFERED, proxies). No list can be complete (JAVA_HOME, for one,
// picks the java a start script runs): protected_names in envletd.conf
// replaces the whole list (entries ending in '*' are prefixes), for
// operators who know their workloads' programs.

// DefaultProtected is the default of protected_names.
var DefaultProtected = []string{
	"LD_*", "GCONV_PATH",
	"PATH", "HOME", "XDG_CONFIG_HOME",
	"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
	"PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONBREAKPOINT", "PYTHONPYCACHEPREFIX",
	"PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB",
	"NODE_OPTIONS", "NODE_PATH",
	"RUBYOPT", "RUBYLIB",
	"JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "CLASSPATH",
	"LUA_INIT*", "LUA_PATH*", "LUA_CPATH*",
	"PHPRC", "PHP_INI_SCAN_DIR",
	"OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
	"GIT_*", "SSH_ASKPASS", "LESSOPEN", "LESSCLOSE", "PAGER", "EDITOR", "VISUAL",
}

// checkNotProtected refuses a protected name for a layer that someone
// other than the workload's user writes (layer: "project" or "group").
func (a *Agent) checkNotProtected(layer, name string) error {
	if a.protected.Has(name) {
		return errorf(CodeProtectedName, "%s makes programs load code chosen by whoever sets it, so the %s layer may not set it; "+
			"set it in the user's own account layer, the registration or [defaults] (protected_names in envletd.conf)", name, layer)
	}
	return nil
}

// protectedReason is what explain shows for a protected name left out.
const protectedReason = "protected name (protected_names): only the user's account layer, the registration and the platform layer may set it"
