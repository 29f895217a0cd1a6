package api

import "github.com/envlet/envlet/agent/wire"

// The stable error codes of the admin API (docs/design.md §1). An error
// reply carries one of them; the HTTP status that goes with each is listed
// in docs/admin-api.md. Those a workload can also see come from agent/wire.
const (
	CodeInvalidName    = wire.CodeInvalidName    // 400: not a valid variable (or secret) name
	CodeReservedName   = "ENV_VAR_RESERVED_NAME" // 400: a name the agent keeps for itself
	CodeInvalidValue   = "ENV_VAR_INVALID_VALUE" // 400: a value with a NUL byte, bad base64, …
	CodeLimitExceeded  = "ENV_VAR_LIMIT_EXCEEDED"
	CodeAlreadyExists  = "ENV_VAR_ALREADY_EXISTS" // 409
	CodeNotFound       = wire.CodeNotFound        // 404: no such variable or secret
	CodeSecretTooLarge = "SECRET_TOO_LARGE"       // 400
	CodeDenied         = wire.CodeDenied          // 403
	CodeProtectedName  = "ENV_VAR_PROTECTED_NAME" // 400: a code-loading name in a project or group layer
	CodeSecretLimit    = "SECRET_LIMIT_EXCEEDED"  // 400: a user's or a project's secrets are at a limit

	CodeInvalidRequest   = "INVALID_REQUEST" // 400: a body or query the agent cannot use
	CodeProjectNotFound  = "PROJECT_NOT_FOUND"
	CodeProjectExists    = "PROJECT_ALREADY_EXISTS"
	CodeWorkloadNotFound = "WORKLOAD_NOT_FOUND"
	CodeWorkloadExists   = "WORKLOAD_ALREADY_EXISTS"
	CodeGroupNotFound    = "GROUP_NOT_FOUND"
	CodeGroupExists      = "GROUP_ALREADY_EXISTS"
	CodeNotFoundGeneric  = "NOT_FOUND"
	CodeUnavailable      = wire.CodeUnavailable // 503: the store cannot be read or written
	CodeInternal         = wire.CodeInternal    // 500
	CodeBusy             = wire.CodeBusy        // 503: request bodies in flight hold all the memory allowed them; retry
	CodeStorageFull      = "STORAGE_FULL"       // 507: the disk under the store or the audit log is full
	CodeStorageReadOnly  = "STORAGE_READ_ONLY"  // 503: that disk is read-only
	CodeStorageFailed    = "STORAGE_FAILED"     // 503: another I/O error there

	// CodeRunLimit (429): the caller already holds as many `envlet run`
	// registrations as max_runs_per_user allows.
	CodeRunLimit = "RUN_LIMIT_EXCEEDED"
	// CodeWorkloadImmutable (409): an update (PUT /v1/workloads/{id})
	// changes a field only a new registration may set: id, user, project
	// or match.
	CodeWorkloadImmutable = "WORKLOAD_FIELD_IMMUTABLE"
	// CodeLastOwner (409): a project's only owner may not leave it; add
	// another owner first (or an admin deletes the project).
	CodeLastOwner = "PROJECT_LAST_OWNER"

	// CodeTooManyConnections (503) refuses a connection before any request
	// is read: the caller's uid or the socket holds as many as allowed.
	CodeTooManyConnections = wire.CodeTooManyConnections
)

// Codes a client produces itself, never the agent: a caller of package
// client branches on them like on the agent's.
const (
	// CodeAgentUnavailable: the socket cannot be reached, or the
	// connection broke before a whole reply arrived.
	CodeAgentUnavailable = "AGENT_UNAVAILABLE"
	// CodeBadReply: the agent answered something the client cannot read.
	CodeBadReply = "BAD_REPLY"
)
