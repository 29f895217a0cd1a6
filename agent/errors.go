package agent

import (
	"errors"
	"fmt"
	"net/http"
)

// Codes are the stable error codes of DESIGN §1, returned by the admin API,
// printed by the CLI and sent to launchers. A message beside a code is for
// people and never holds a value.
const (
	CodeInvalidName    = "ENV_VAR_INVALID_NAME"
	CodeReservedName   = "ENV_VAR_RESERVED_NAME"
	CodeProtectedName  = "ENV_VAR_PROTECTED_NAME" // a code-loading name in a layer the workload's user does not write (protect.go)
	CodeSecretLimit    = "SECRET_LIMIT_EXCEEDED"  // a user's or a project's secrets are at a limit (limits.go)
	CodeInvalidValue   = "ENV_VAR_INVALID_VALUE"
	CodeLimitExceeded  = "ENV_VAR_LIMIT_EXCEEDED"
	CodeAlreadyExists  = "ENV_VAR_ALREADY_EXISTS"
	CodeNotFound       = "ENV_VAR_NOT_FOUND"
	CodeSecretTooLarge = "SECRET_TOO_LARGE"
	CodeDenied         = "PERMISSION_DENIED"

	CodeInvalidRequest   = "INVALID_REQUEST"
	CodeProjectNotFound  = "PROJECT_NOT_FOUND"
	CodeProjectExists    = "PROJECT_ALREADY_EXISTS"
	CodeWorkloadNotFound = "WORKLOAD_NOT_FOUND"
	CodeWorkloadExists   = "WORKLOAD_ALREADY_EXISTS"
	CodeGroupNotFound    = "GROUP_NOT_FOUND"
	CodeGroupExists      = "GROUP_ALREADY_EXISTS"
	CodeNotFoundGeneric  = "NOT_FOUND"
	CodeUnavailable      = "BACKEND_UNAVAILABLE"
	CodeInternal         = "INTERNAL"
	CodeBusy             = "BUSY" // request bodies in flight hold all the memory allowed them (wipe.go)

	// Workload socket refusals.
	CodeWorkloadUnknown   = "WORKLOAD_UNKNOWN"
	CodeWorkloadAmbiguous = "WORKLOAD_AMBIGUOUS"
	CodeBadRequest        = "BAD_REQUEST"
	CodeUnsupported       = "UNSUPPORTED"
	CodeWatchLimit        = "WATCH_LIMIT_EXCEEDED"
)

// Error is an error with a stable code. Message must never contain a value.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

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
	case CodeAlreadyExists, CodeProjectExists, CodeWorkloadExists, CodeGroupExists:
		return http.StatusConflict
	case CodeUnavailable, CodeBusy:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
