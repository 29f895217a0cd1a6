package main

import (
	"bytes"
	"encoding/json"
	"github.com/envlet/envlet/agent/api"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// printJSON writes a reply for --json: the agent's JSON, indented, every
// field kept.
func printJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, bytes.TrimSpace(raw), "", "  "); err != nil {
		return errorf(codeBadReply, "reply is not valid JSON")
	}
	b.WriteByte('\n')
	return write(w, b.Bytes())
}

func write(w io.Writer, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return errorf(codeIO, "write output: %v", err)
	}
	return nil
}

func writeString(w io.Writer, s string) error { return write(w, []byte(s)) }

// printVars prints NAME=VALUE lines, values as the agent sent them
// (masked unless revealed).
func printVars(w io.Writer, vars []api.Variable) error {
	var b strings.Builder
	for _, v := range vars {
		b.WriteString(v.Name + "=" + display(v.Value) + "\n")
	}
	return writeString(w, b.String())
}

// display makes a value safe for one line of a listing: a value holding a
// control character (a newline, a tab, a terminal escape) or invalid UTF-8
// is printed Go-quoted. `env get` and --json print values exactly.
func display(s string) string {
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// table writes aligned columns; rows are tab-separated cells.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = display(c)
	}
	io.WriteString(t.tw, strings.Join(cells, "\t")+"\n")
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return errorf(codeIO, "write output: %v", err)
	}
	return nil
}

// orDash is a table cell for s; "-" when it is empty (e.g. a date a
// record written before envlet kept dates does not have).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// updated is a record's last change for a table cell: "TIME by USER", or
// "-" for a record older than dated records.
func updated(d api.Dated) string {
	if d.UpdatedAt == "" {
		return "-"
	}
	if d.UpdatedBy == "" {
		return d.UpdatedAt
	}
	return d.UpdatedAt + " by " + d.UpdatedBy
}

// joinOrDash joins names for a table cell; "-" for none.
func joinOrDash(names []string) string {
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

// printFields prints a JSON object as "key: value" lines: the keys in order
// first, then any others the agent added, sorted. Strings are unquoted;
// numbers, booleans and anything else print as JSON.
func printFields(w io.Writer, raw []byte, order ...string) error {
	var m map[string]json.RawMessage
	if err := decode(raw, &m); err != nil {
		return errorf(codeBadReply, "decode reply: %v", err)
	}
	var keys []string
	seen := map[string]bool{}
	for _, k := range order {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
			seen[k] = true
		}
	}
	var rest []string
	for k := range m {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	keys = append(keys, rest...)
	var b strings.Builder
	for _, k := range keys {
		v := m[k]
		var s string
		if v = bytes.TrimSpace(v); len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
			var c bytes.Buffer
			if json.Compact(&c, v) == nil {
				s = c.String()
			} else {
				s = string(v)
			}
		}
		b.WriteString(k + ": " + display(s) + "\n")
	}
	return writeString(w, b.String())
}
