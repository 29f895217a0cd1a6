package api

import "errors"

// Error is an error with a stable code: the agent's reply
// {"error":{"code","message"}}, or a client's own (CodeAgentUnavailable,
// CodeBadReply). Message is for people and never holds a value.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrorReply is the body of every error reply.
type ErrorReply struct {
	Error *Error `json:"error"`
}

// CodeOf returns the code of the first *Error in err's chain, "" when there
// is none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
