package launcher

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/envlet/envlet/agent/wire"
)

// Exit codes, as env(1) and tini use them.
const (
	exitFailure     = 125 // the launcher itself failed
	exitCannotRun   = 126 // the program exists but cannot be executed
	exitNotFound    = 127 // the program does not exist
	defaultSocket   = "/run/envlet/workload.sock"
	defaultTimeout  = 10 * time.Second
	maxTokenFileLen = 64 << 10 // read no further: a token is at most wire.MaxToken
)

const usage = `usage: envlet-exec [--token-file F] [--socket PATH] [--] PROGRAM [ARGS...]
       envlet-exec [--token-file F] [--socket PATH] --watch
                   [--on-change restart|exit|signal:NAME] [--grace DURATION]
                   [--] PROGRAM [ARGS...]
       envlet-exec [--token-file F] [--socket PATH] --get-secret NAME

Asks the envlet agent for this workload's environment, applies it to the
environment envlet-exec started with (less every ENVLET_* variable), looks
PROGRAM up on the resulting PATH and executes it in place.

With --watch, envlet-exec stays as PROGRAM's parent instead: it passes
signals on to it, reaps every child (it may be PID 1), exits with its
status, and when the agent says the environment changed it does what
--on-change asks.

options:
  --token-file F     send the token in file F (default $ENVLET_TOKEN_FILE;
                     no token when neither is set)
  --socket PATH      the agent's workload socket (default $ENVLET_SOCKET,
                     else /run/envlet/workload.sock)
  --get-secret NAME  print the secret NAME to stdout byte for byte and exit
  --watch            supervise PROGRAM and follow changes (see above)
  --on-change WHAT   on a change: restart (default) stops PROGRAM with
                     SIGTERM, SIGKILL after the grace period, and starts it
                     again with the new environment; exit stops it the same
                     way and exits with its status; signal:NAME sends it
                     signal NAME (signal:HUP) to make it re-read its config
  --grace DURATION   from SIGTERM to SIGKILL (default 10s; 500ms, 1m, or
                     seconds)
  -h, --help         print this help and exit

environment:
  ENVLET_SOCKET, ENVLET_TOKEN_FILE  as above
  ENVLET_TIMEOUT     seconds to wait for the agent (default 10; 0 waits forever)
  ENVLET_RETRY       seconds to keep retrying an agent that is busy
                     (TOO_MANY_CONNECTIONS, BUSY) or restarting (socket
                     missing or not listening, reply cut off)
                     (default 2; 0 does not retry)

exit status: 125 envlet-exec failed, 126 PROGRAM cannot be run, 127 PROGRAM
not found, otherwise PROGRAM's own (128+N when signal N ended it). Errors
go to stderr as "envlet-exec: CODE: message".
`

// failure is why the launcher stops: a stable code for scripts, a message
// for people (never a value), and the exit status.
type failure struct {
	code      string
	msg       string
	exit      int
	transient bool // the agent is busy (or restarting): open tries again
}

func usageError(msg string) *failure {
	return &failure{code: "USAGE", msg: msg + " (see envlet-exec --help)", exit: exitFailure}
}

// Main runs envlet-exec with args (without argv[0]) and environ, its own
// environment as os.Environ returns it. It returns on failure, with 125,
// 126 or 127; after --help or --get-secret, with 0; and with --watch, with
// the program's exit status once it has exited for good. Otherwise the
// program has replaced the process.
func Main(args []string, environ []string) int {
	opts, f := parseArgs(args)
	if f == nil && opts.help {
		io.WriteString(os.Stdout, usage)
		return 0
	}
	code := 0
	if f == nil {
		code, f = run(opts, environ)
	}
	if f == nil {
		return code
	}
	io.WriteString(os.Stderr, "envlet-exec: "+f.code+": "+f.msg+"\n")
	return f.exit
}

type options struct {
	tokenFile string
	socket    string
	secret    string
	getSecret bool
	help      bool
	argv      []string // PROGRAM and its ARGS

	watch    bool          // supervise PROGRAM instead of exec
	onChange onChange      // what a change does (--on-change; restart by default)
	grace    time.Duration // from SIGTERM to SIGKILL on a restart or exit (--grace)
}

// parseArgs reads the flags by hand: the flag package would pull in fmt and
// reflect. Flags take one or two dashes, and "--name value" or
// "--name=value". The first argument that is not a flag, or whatever follows
// "--", is the program.
func parseArgs(args []string) (options, *failure) {
	o := options{onChange: onChange{action: restart}, grace: defaultGrace}
	var onChangeSet, graceSet bool
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.argv = args[i+1:]
			break
		}
		if len(a) < 2 || a[0] != '-' {
			o.argv = args[i:]
			break
		}
		name := strings.TrimPrefix(a[1:], "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		switch name {
		case "h", "help", "watch":
			if hasValue {
				return o, usageError("--" + name + " takes no value")
			}
			if name == "watch" {
				o.watch = true
			} else {
				o.help = true
			}
			continue
		case "token-file", "socket", "get-secret", "on-change", "grace":
		default:
			// Name the flag without what follows '=': that may be a value.
			return o, usageError("unknown flag --" + printable(name, 64))
		}
		if !hasValue {
			if i+1 == len(args) {
				return o, usageError("--" + name + " needs a value")
			}
			i++
			value = args[i]
		}
		if value == "" {
			return o, usageError("--" + name + " needs a non-empty value")
		}
		switch name {
		case "token-file":
			o.tokenFile = value
		case "socket":
			o.socket = value
		case "get-secret":
			o.secret, o.getSecret = value, true
		case "on-change":
			oc, ok := parseOnChange(value)
			if !ok {
				return o, usageError("--on-change must be restart, exit or signal:NAME (such as signal:HUP)")
			}
			o.onChange, onChangeSet = oc, true
		case "grace":
			d, ok := parseDuration(value)
			if !ok {
				return o, usageError("--grace must be a duration such as 10s, 500ms or 1m30s")
			}
			o.grace, graceSet = d, true
		}
	}
	switch {
	case o.help:
	case o.getSecret && len(o.argv) > 0:
		return o, usageError("--get-secret takes no PROGRAM")
	case o.getSecret && o.watch:
		return o, usageError("--get-secret and --watch do not go together")
	case !o.watch && (onChangeSet || graceSet):
		return o, usageError("--on-change and --grace need --watch")
	case !o.getSecret && len(o.argv) == 0:
		return o, usageError("missing PROGRAM")
	}
	return o, nil
}

// getenv returns the first NAME= in environ, as getenv(3) does.
func getenv(environ []string, name string) string {
	for _, kv := range environ {
		if hasName(kv, name) {
			return kv[len(name)+1:]
		}
	}
	return ""
}

// client is how the launcher reaches the agent: the socket, the token it
// sends, and how long it waits for a reply.
type client struct {
	socket  string
	token   []byte
	timeout time.Duration
	retry   time.Duration // how long open keeps trying a busy agent (ENVLET_RETRY)
}

func newClient(o options, environ []string) (client, *failure) {
	c := client{socket: o.socket}
	if c.socket == "" {
		c.socket = getenv(environ, "ENVLET_SOCKET")
	}
	if c.socket == "" {
		c.socket = defaultSocket
	}
	tokenFile := o.tokenFile
	if tokenFile == "" {
		tokenFile = getenv(environ, "ENVLET_TOKEN_FILE")
	}
	var f *failure
	if c.timeout, f = parseTimeout(getenv(environ, "ENVLET_TIMEOUT")); f != nil {
		return c, f
	}
	if c.retry, f = parseSecondsVar("ENVLET_RETRY", getenv(environ, "ENVLET_RETRY"), defaultRetry); f != nil {
		return c, f
	}
	c.token, f = readToken(tokenFile)
	return c, f
}

// run does what o asks and returns the exit status, with the failure to
// report when there is one. A program that was exec'd never returns here.
func run(o options, environ []string) (int, *failure) {
	c, f := newClient(o, environ)
	switch {
	case f != nil:
		return 0, f
	case o.getSecret:
		return 0, getSecret(c, o.secret)
	case o.watch:
		return supervise(c, o, environ)
	}
	env, _, f := c.getEnv(environ)
	if f != nil {
		return 0, f
	}
	return 0, execProgram(o.argv, env)
}

// getEnv asks the agent for the environment and returns it merged into
// environ, with the revision the agent served.
func (c client) getEnv(environ []string) ([]string, uint64, *failure) {
	typ, payload, f := c.ask(wire.Request{Type: wire.TypeGetEnv, Token: c.token})
	if f != nil {
		return nil, 0, f
	}
	return mergeReply(environ, typ, payload)
}

// mergeReply decodes an Env frame and merges it into environ.
func mergeReply(environ []string, typ wire.Type, payload []byte) ([]string, uint64, *failure) {
	if typ != wire.TypeEnv {
		return nil, 0, badReply("want an Env frame, got " + typ.String())
	}
	rev, entries, err := wire.DecodeEnv(payload)
	if err != nil {
		return nil, 0, badReply(err.Error())
	}
	return merge(environ, entries), rev, nil
}

func getSecret(c client, name string) *failure {
	// Refuse locally, with the rule the agent applies, a name the agent
	// would only refuse as a malformed frame.
	if len(name) > wire.MaxName {
		return usageError("--get-secret: name longer than " + strconv.Itoa(wire.MaxName) + " bytes")
	}
	req := wire.Request{Type: wire.TypeGetSecret, Token: c.token, Name: name}
	if _, err := wire.DecodeRequest(req.Type, wire.AppendRequest(nil, req)[wire.HeaderSize:]); err != nil {
		return usageError("--get-secret: name must be non-empty and hold no '='")
	}
	typ, payload, f := c.ask(req)
	if f != nil {
		return f
	}
	return printSecret(typ, payload)
}

// parseTimeout reads $ENVLET_TIMEOUT: seconds, a decimal fraction allowed,
// 0 for none.
func parseTimeout(s string) (time.Duration, *failure) {
	return parseSecondsVar("ENVLET_TIMEOUT", s, defaultTimeout)
}

// parseSecondsVar reads s, the value of the variable name, as seconds; def
// when it is empty.
func parseSecondsVar(name, s string, def time.Duration) (time.Duration, *failure) {
	if s == "" {
		return def, nil
	}
	d, ok := parseSeconds(s)
	if !ok {
		return 0, usageError(name + " must be a number of seconds")
	}
	return d, nil
}

// parseSeconds reads a number of seconds, a decimal fraction allowed, up to
// a year. It parses by hand because strconv.ParseFloat alone would add tens
// of kilobytes of tables to the binary.
func parseSeconds(s string) (time.Duration, bool) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, false
	}
	var sec time.Duration
	for _, c := range []byte(whole) {
		// A year is plenty, and the bound keeps the sum below from overflowing.
		if c < '0' || c > '9' || sec > 365*24*3600 {
			return 0, false
		}
		sec = sec*10 + time.Duration(c-'0')
	}
	d := sec * time.Second
	for unit, c := time.Second/10, []byte(frac); len(c) > 0; unit, c = unit/10, c[1:] {
		if c[0] < '0' || c[0] > '9' {
			return 0, false
		}
		d += time.Duration(c[0]-'0') * unit // digits past the nanosecond add 0
	}
	return d, true
}

// readToken returns the token in path, trailing whitespace trimmed, or none
// when path is empty. The token is a credential: it never reaches a message.
func readToken(path string) ([]byte, *failure) {
	if path == "" {
		return nil, nil
	}
	fail := func(msg string) *failure {
		return &failure{code: codeTokenFile, msg: "read token file " + path + ": " + msg, exit: exitFailure}
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, fail(errnoText(err))
	}
	defer file.Close()
	// One byte past the limit tells a long file from one that fits.
	b := make([]byte, maxTokenFileLen+1)
	n := 0
	for n < len(b) {
		m, err := file.Read(b[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fail(errnoText(err))
		}
	}
	b = b[:n]
	token := bytes.TrimRight(b, " \t\r\n")
	if len(b) > maxTokenFileLen || len(token) > wire.MaxToken {
		return nil, fail("token longer than " + strconv.Itoa(wire.MaxToken) + " bytes")
	}
	return token, nil
}

// errnoText is an error's last part, "permission denied" rather than
// "open /path: permission denied", for messages that name the path already.
func errnoText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

func badReply(msg string) *failure {
	return &failure{code: codeBadReply, msg: msg, exit: exitFailure}
}

// refused turns an Error frame into the agent's own code and message.
func refused(payload []byte) *failure {
	code, msg, err := wire.DecodeError(payload)
	if err != nil {
		return badReply(err.Error())
	}
	return &failure{code: printable(code, 64), msg: "agent refused: " + printable(msg, 1024), exit: exitFailure}
}

// printable keeps an agent's text from writing control sequences to a
// terminal, and bounds its length.
func printable(s string, limit int) string {
	if len(s) > limit {
		s = s[:limit]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = '?'
		}
	}
	return string(b)
}

func printSecret(typ wire.Type, payload []byte) *failure {
	defer clear(payload)
	if typ != wire.TypeSecret {
		return badReply("want a Secret frame, got " + typ.String())
	}
	value, err := wire.DecodeSecret(payload)
	if err != nil {
		return badReply(err.Error())
	}
	if _, err := os.Stdout.Write(value); err != nil {
		return &failure{code: codeOutput, msg: "write secret to stdout: " + errnoText(err), exit: exitFailure}
	}
	return nil
}
