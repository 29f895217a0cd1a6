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
       envlet-exec [--token-file F] [--socket PATH] --get-secret NAME

Asks the envlet agent for this workload's environment, applies it to the
environment envlet-exec started with (less every ENVLET_* variable), looks
PROGRAM up on the resulting PATH and executes it in place.

options:
  --token-file F     send the token in file F (default $ENVLET_TOKEN_FILE;
                     no token when neither is set)
  --socket PATH      the agent's workload socket (default $ENVLET_SOCKET,
                     else /run/envlet/workload.sock)
  --get-secret NAME  print the secret NAME to stdout byte for byte and exit
  -h, --help         print this help and exit

environment:
  ENVLET_SOCKET, ENVLET_TOKEN_FILE  as above
  ENVLET_TIMEOUT     seconds to wait for the agent (default 10; 0 waits forever)

exit status: 125 envlet-exec failed, 126 PROGRAM cannot be run, 127 PROGRAM
not found, otherwise PROGRAM's own. Errors go to stderr as
"envlet-exec: CODE: message".
`

// failure is why the launcher stops: a stable code for scripts, a message
// for people (never a value), and the exit status.
type failure struct {
	code string
	msg  string
	exit int
}

func usageError(msg string) *failure {
	return &failure{code: "USAGE", msg: msg + " (see envlet-exec --help)", exit: exitFailure}
}

// Main runs envlet-exec with args (without argv[0]) and environ, its own
// environment as os.Environ returns it. It returns only on failure, with
// 125, 126 or 127, or after --help or --get-secret, with 0; otherwise the
// program has replaced the process.
func Main(args []string, environ []string) int {
	opts, f := parseArgs(args)
	if f == nil && opts.help {
		io.WriteString(os.Stdout, usage)
		return 0
	}
	if f == nil {
		f = run(opts, environ)
	}
	if f == nil {
		return 0
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
}

// parseArgs reads the flags by hand: the flag package would pull in fmt and
// reflect. Flags take one or two dashes, and "--name value" or
// "--name=value". The first argument that is not a flag, or whatever follows
// "--", is the program.
func parseArgs(args []string) (options, *failure) {
	var o options
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
		var dst *string
		switch name {
		case "h", "help":
			if hasValue {
				return o, usageError("--help takes no value")
			}
			o.help = true
			continue
		case "token-file":
			dst = &o.tokenFile
		case "socket":
			dst = &o.socket
		case "get-secret":
			dst = &o.secret
			o.getSecret = true
		case "watch", "on-change":
			return o, usageError("--" + name + " is not supported yet")
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
		*dst = value
	}
	switch {
	case o.help:
	case o.getSecret && len(o.argv) > 0:
		return o, usageError("--get-secret takes no PROGRAM")
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

func run(o options, environ []string) *failure {
	socket := o.socket
	if socket == "" {
		socket = getenv(environ, "ENVLET_SOCKET")
	}
	if socket == "" {
		socket = defaultSocket
	}
	tokenFile := o.tokenFile
	if tokenFile == "" {
		tokenFile = getenv(environ, "ENVLET_TOKEN_FILE")
	}
	timeout, f := parseTimeout(getenv(environ, "ENVLET_TIMEOUT"))
	if f != nil {
		return f
	}
	token, f := readToken(tokenFile)
	if f != nil {
		return f
	}

	req := wire.Request{Type: wire.TypeGetEnv, Token: token}
	if o.getSecret {
		req = wire.Request{Type: wire.TypeGetSecret, Token: token, Name: o.secret}
		// Refuse locally, with the rule the agent applies, a name the agent
		// would only refuse as a malformed frame.
		if len(o.secret) > wire.MaxName {
			return usageError("--get-secret: name longer than " + strconv.Itoa(wire.MaxName) + " bytes")
		}
		if _, err := wire.DecodeRequest(req.Type, wire.AppendRequest(nil, req)[wire.HeaderSize:]); err != nil {
			return usageError("--get-secret: name must be non-empty and hold no '='")
		}
	}

	typ, payload, f := ask(socket, timeout, req)
	if f != nil {
		return f
	}
	if o.getSecret {
		return printSecret(typ, payload)
	}
	if typ != wire.TypeEnv {
		return badReply("want an Env frame, got " + typ.String())
	}
	_, entries, err := wire.DecodeEnv(payload)
	if err != nil {
		return badReply(err.Error())
	}
	return execProgram(o.argv, merge(environ, entries))
}

// parseTimeout reads $ENVLET_TIMEOUT: seconds, a decimal fraction allowed,
// 0 for none. It parses by hand because strconv.ParseFloat alone would add
// tens of kilobytes of tables to the binary.
func parseTimeout(s string) (time.Duration, *failure) {
	if s == "" {
		return defaultTimeout, nil
	}
	bad := usageError("ENVLET_TIMEOUT must be a number of seconds")
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, bad
	}
	var sec time.Duration
	for _, c := range []byte(whole) {
		// A year is plenty, and the bound keeps the sum below from overflowing.
		if c < '0' || c > '9' || sec > 365*24*3600 {
			return 0, bad
		}
		sec = sec*10 + time.Duration(c-'0')
	}
	d := sec * time.Second
	for unit, c := time.Second/10, []byte(frac); len(c) > 0; unit, c = unit/10, c[1:] {
		if c[0] < '0' || c[0] > '9' {
			return 0, bad
		}
		d += time.Duration(c[0]-'0') * unit // digits past the nanosecond add 0
	}
	return d, nil
}

// readToken returns the token in path, trailing whitespace trimmed, or none
// when path is empty. The token is a credential: it never reaches a message.
func readToken(path string) ([]byte, *failure) {
	if path == "" {
		return nil, nil
	}
	fail := func(msg string) *failure {
		return &failure{code: "TOKEN_FILE", msg: "read token file " + path + ": " + msg, exit: exitFailure}
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
	return &failure{code: "BAD_REPLY", msg: msg, exit: exitFailure}
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
		return &failure{code: "OUTPUT", msg: "write secret to stdout: " + errnoText(err), exit: exitFailure}
	}
	return nil
}
