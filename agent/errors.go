package agent

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/envlet/envlet/agent/api"
	"github.com/envlet/envlet/agent/wire"
)

// Codes are the stable error codes of docs/design.md §1, returned by the
// admin API, printed by the CLI and sent to launchers. They are declared once,
// in agent/api (the admin API's contract) and agent/wire (what a workload
// sees); these names are the agent's short spellings of them.
const (
	CodeInvalidName    = api.CodeInvalidName
	CodeReservedName   = api.CodeReservedName
	CodeInvalidValue   = api.CodeInvalidValue
	CodeLimitExceeded  = api.CodeLimitExceeded
	CodeAlreadyExists  = api.CodeAlreadyExists
	CodeNotFound       = api.CodeNotFound
	CodeSecretTooLarge = api.CodeSecretTooLarge
	CodeDenied         = api.CodeDenied
	CodeProtectedName  = api.CodeProtectedName // a code-loading name in a layer the workload's user does not write (protect.go)
	CodeSecretLimit    = api.CodeSecretLimit   // a user's or a project's secrets are at a limit (limits.go)

	CodeInvalidRequest   = api.CodeInvalidRequest
	CodeProjectNotFound  = api.CodeProjectNotFound
	CodeProjectExists    = api.CodeProjectExists
	CodeWorkloadNotFound = api.CodeWorkloadNotFound
	CodeWorkloadExists   = api.CodeWorkloadExists
	CodeGroupNotFound    = api.CodeGroupNotFound
	CodeGroupExists      = api.CodeGroupExists
	CodeLastOwner        = api.CodeLastOwner // a project's only owner leaving it (admin_views.go)
	CodeNotFoundGeneric  = api.CodeNotFoundGeneric
	CodeUnavailable      = api.CodeUnavailable
	CodeInternal         = api.CodeInternal
	CodeBusy             = api.CodeBusy // request bodies in flight hold all the memory allowed them (wipe.go)

	// A write the disk refused (backend.go storageError): the store's or
	// the audit log's file system is full, read-only, or failing.
	CodeStorageFull     = api.CodeStorageFull
	CodeStorageReadOnly = api.CodeStorageReadOnly
	CodeStorageFailed   = api.CodeStorageFailed

	// Workload socket refusals.
	CodeWorkloadUnknown   = wire.CodeWorkloadUnknown
	CodeWorkloadAmbiguous = wire.CodeWorkloadAmbiguous
	CodeBadRequest        = wire.CodeBadRequest
	CodeUnsupported       = wire.CodeUnsupported
	CodeWatchLimit        = wire.CodeWatchLimit
)

// Self-service runs and workload updates (admin_run.go, admin_workload.go).
const (
	CodeRunLimit          = api.CodeRunLimit
	CodeWorkloadImmutable = api.CodeWorkloadImmutable
)

// Error is an error with a stable code (api.Error). Message must never
// contain a value.
type Error = api.Error

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// codeOf returns the code of err, INTERNAL when it carries none.
func codeOf(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

// httpStatus maps a code to the HTTP status of the admin API.
func httpStatus(code string) int {
	switch code {
	case CodeInvalidName, CodeReservedName, CodeInvalidValue, CodeLimitExceeded,
		CodeSecretTooLarge, CodeInvalidRequest, CodeProtectedName, CodeSecretLimit:
		return http.StatusBadRequest
	case CodeDenied:
		return http.StatusForbidden
	case CodeNotFound, CodeProjectNotFound, CodeWorkloadNotFound, CodeNotFoundGeneric, CodeGroupNotFound:
		return http.StatusNotFound
	case CodeAlreadyExists, CodeProjectExists, CodeWorkloadExists, CodeGroupExists, CodeWorkloadImmutable, CodeLastOwner:
		return http.StatusConflict
	case CodeRunLimit:
		return http.StatusTooManyRequests
	case CodeUnavailable, CodeBusy, CodeStorageReadOnly, CodeStorageFailed:
		return http.StatusServiceUnavailable
	case CodeStorageFull:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}
