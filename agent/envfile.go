package agent

import (
	"unicode/utf8"
)

// The file formats of a mount (docs/design.md §6). Each appender writes one
// variable into dst and reports whether the format can carry the value;
// when it cannot, dst is returned unchanged and the caller lists the name
// in the format's ".skipped" file instead. The appenders write into the
// caller's (locked) buffer and keep no copy of a value.

// appendSystemdEnv appends `NAME="VALUE"` and a newline in the syntax of
// systemd's EnvironmentFile= (src/basic/env-file.c, parse_env_file_internal):
// the value is double-quoted; inside the quotes a backslash makes the next
// character literal when it is one of \ " $ ` and every other character,
// newlines included, stands for itself. systemd refuses the whole file when
// a value is not valid UTF-8, so such a value is not carried. The same text
// is valid for a POSIX shell (`set -a; . ./env`), whose double quotes follow
// the same rules.
func appendSystemdEnv(dst []byte, name string, value []byte) ([]byte, bool) {
	if !utf8.Valid(value) {
		return dst, false
	}
	dst = append(dst, name...)
	dst = append(dst, '=', '"')
	for _, c := range value {
		switch c {
		case '\\', '"', '$', '`':
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"', '\n'), true
}

// dockerLineMax is the longest line `docker run --env-file` reads: it scans
// lines with a bufio.Scanner, whose buffer holds at most 64 KiB including
// the newline; a longer line fails the whole file.
const dockerLineMax = 64<<10 - 1

// appendDockerEnv appends NAME=VALUE and a newline for
// `docker run --env-file` (docker/cli opts/file.go), which has no quoting:
// the value runs verbatim to the end of the line. It cannot carry a value
// with a newline, one ending in a carriage return (the line scanner drops
// it), one that is not valid UTF-8 (docker refuses the whole file), or a
// line over dockerLineMax bytes.
func appendDockerEnv(dst []byte, name string, value []byte) ([]byte, bool) {
	switch {
	case len(name)+1+len(value) > dockerLineMax,
		!utf8.Valid(value),
		len(value) > 0 && value[len(value)-1] == '\r':
		return dst, false
	}
	for _, c := range value {
		if c == '\n' {
			return dst, false
		}
	}
	dst = append(dst, name...)
	dst = append(dst, '=')
	dst = append(dst, value...)
	return append(dst, '\n'), true
}

// appendJSONString appends s as a JSON string. It reports false, leaving
// dst unchanged, when s is not valid UTF-8: JSON text is Unicode, and a
// replacement character would change the value.
func appendJSONString(dst []byte, s []byte) ([]byte, bool) {
	if !utf8.Valid(s) {
		return dst, false
	}
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c < 0x20 || c == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"'), true
}

// envFiles renders the three formats of one environment (sorted names,
// cleared names left out) into bufs sized by the caller, and the names each
// format could not carry.
type envFiles struct {
	env, docker, json             []byte
	envSkip, dockerSkip, jsonSkip []string
}

// renderEnvFiles writes vars into e, appending to the three slices. Give
// each slice the capacity its size function asks for (envSize, dockerSize,
// jsonSize), so no value is copied into memory the caller does not control.
func renderEnvFiles(e *envFiles, vars []mountVar) { renderEnvFilesFast(e, vars, plainValue) }

// renderEnvFilesFast is renderEnvFiles taking the fast path for the values
// plain accepts; the tests give it one that accepts none, to hold the fast
// path to the checked one.
func renderEnvFilesFast(e *envFiles, vars []mountVar, plain func([]byte) bool) {
	e.json = append(e.json, '{')
	first := true
	for _, v := range vars {
		if plain(v.value) {
			// Every format takes it as it is: the output of the
			// appenders below, without their checks byte by byte.
			e.env = append(e.env, v.name...)
			e.env = append(e.env, '=', '"')
			e.env = append(e.env, v.value...)
			e.env = append(e.env, '"', '\n')
			if len(v.name)+1+len(v.value) <= dockerLineMax {
				e.docker = append(e.docker, v.name...)
				e.docker = append(e.docker, '=')
				e.docker = append(e.docker, v.value...)
				e.docker = append(e.docker, '\n')
			} else {
				e.dockerSkip = append(e.dockerSkip, v.name)
			}
			if !first {
				e.json = append(e.json, ',')
			}
			e.json = append(e.json, '\n', ' ', ' ')
			e.json, _ = appendJSONString(e.json, []byte(v.name))
			e.json = append(e.json, ':', ' ', '"')
			e.json = append(e.json, v.value...)
			e.json = append(e.json, '"')
			first = false
			continue
		}
		var ok bool
		if e.env, ok = appendSystemdEnv(e.env, v.name, v.value); !ok {
			e.envSkip = append(e.envSkip, v.name)
		}
		if e.docker, ok = appendDockerEnv(e.docker, v.name, v.value); !ok {
			e.dockerSkip = append(e.dockerSkip, v.name)
		}
		mark := len(e.json)
		if !first {
			e.json = append(e.json, ',')
		}
		e.json = append(e.json, '\n', ' ', ' ')
		e.json, _ = appendJSONString(e.json, []byte(v.name))
		e.json = append(e.json, ':', ' ')
		if e.json, ok = appendJSONString(e.json, v.value); !ok {
			e.json = e.json[:mark]
			e.jsonSkip = append(e.jsonSkip, v.name)
			continue
		}
		first = false
	}
	if !first {
		e.json = append(e.json, '\n')
	}
	e.json = append(e.json, '}', '\n')
}

// plainByte marks the bytes every format carries as they are: printable
// ASCII but for the four the env file escapes (\ " $ `), of which JSON
// escapes two.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '\\' && c != '"' && c != '$' && c != '`'
	}
	return t
}()

// plainValue reports whether every byte of value is plain (plainByte):
// most values are, and need no escaping, checking or UTF-8 validation.
func plainValue(value []byte) bool {
	for _, c := range value {
		if !plainByte[c] {
			return false
		}
	}
	return true
}

// Upper bounds of each format's size for vars, plus room for a header line.
func envSize(vars []mountVar) int {
	n := 256
	for _, v := range vars {
		n += len(v.name) + 2*len(v.value) + 4 // NAME="…"\n, every byte escaped
	}
	return n
}

func dockerSize(vars []mountVar) int {
	n := 256
	for _, v := range vars {
		n += len(v.name) + len(v.value) + 2 // NAME=…\n
	}
	return n
}

func jsonSize(vars []mountVar) int {
	n := 4
	for _, v := range vars {
		n += 6*len(v.name) + 6*len(v.value) + 10 // ,\n  "NAME": "…", every byte as \u00XX
	}
	return n
}
