package launcher

// The launcher's own codes, printed as "envlet-exec: CODE: message" when it
// fails before the program runs. Codes the agent sends (and the transient
// ones the launcher retries, wire.Transient) are declared in agent/wire.
const (
	codeAgentUnreachable = "AGENT_UNREACHABLE" // no connection, or it broke
	codeNotFound         = "NOT_FOUND"         // PROGRAM is not on PATH (exit 127)
	codeNotExecutable    = "NOT_EXECUTABLE"    // PROGRAM cannot be run (exit 126)
	codeTokenFile        = "TOKEN_FILE"        // the token file cannot be read
	codeBadReply         = "BAD_REPLY"         // the agent's reply did not decode
	codeOutput           = "OUTPUT"            // writing a secret to stdout failed
)
