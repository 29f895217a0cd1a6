package wire

// Codes the agent sends in an Error frame on the workload socket, and the
// ones a launcher branches on. They are the stable error codes of the
// product (docs/design.md §1): an Error frame's code is one of these, and a
// client may compare against them. The admin API (agent/api) uses the same
// strings where the meaning is the same, and takes them from here, so each
// code is declared once.
//
// The launcher may not import agent/api (it pulls in encoding/json), which
// is why the codes a workload can see live in this package.
const (
	// CodeWorkloadUnknown: no registration matches the caller.
	CodeWorkloadUnknown = "WORKLOAD_UNKNOWN"
	// CodeWorkloadAmbiguous: more than one registration matches the caller.
	CodeWorkloadAmbiguous = "WORKLOAD_AMBIGUOUS"
	// CodeBadRequest: the request frame did not decode.
	CodeBadRequest = "BAD_REQUEST"
	// CodeUnsupported: a request type or version this agent does not serve.
	CodeUnsupported = "UNSUPPORTED"
	// CodeWatchLimit: the caller already holds as many watches as allowed.
	CodeWatchLimit = "WATCH_LIMIT_EXCEEDED"
	// CodeNotFound: the secret or variable asked for does not exist.
	CodeNotFound = "ENV_VAR_NOT_FOUND"
	// CodeInvalidName: a name asked for is not a valid variable name.
	CodeInvalidName = "ENV_VAR_INVALID_NAME"
	// CodeDenied: the caller may not have what it asked for.
	CodeDenied = "PERMISSION_DENIED"
	// CodeInternal: the agent failed; the message says where.
	CodeInternal = "INTERNAL"
	// CodeUnavailable: the store cannot be read.
	CodeUnavailable = "BACKEND_UNAVAILABLE"

	// CodeTooManyConnections: the connection was refused before any
	// request was read, because the caller's uid or the socket holds as
	// many connections as allowed. Transient: a launcher retries it.
	CodeTooManyConnections = "TOO_MANY_CONNECTIONS"
	// CodeBusy: the agent holds as much request memory as allowed.
	// Transient: a launcher retries it.
	CodeBusy = "BUSY"
)

// Transient reports whether an Error frame's code means "try again shortly"
// rather than a refusal: a launcher retries these within its retry window.
func Transient(code string) bool {
	return code == CodeTooManyConnections || code == CodeBusy
}
