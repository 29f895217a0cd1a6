// Package client speaks envletd's admin API (package api) over its Unix
// socket: one HTTP/1.1 request per call, the reply decoded, and an error
// reply {"error":{"code","message"}} returned as an *api.Error. The CLI
// (cmd/envlet) and the web console use it; so can any Go program.
//
// It owns dialing, request encoding, reply size limits and error decoding.
// It must not print, retry, or quote a reply body in an error: a reply can
// hold values, and an error message never does.
package client
