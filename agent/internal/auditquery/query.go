package auditquery

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/envlet/envlet/agent/api"
)

// Filter says which records match; zero fields match everything.
type Filter struct {
	Since, Until time.Time // inclusive bounds on the record's time
	User         string    // the caller, the workload's user, or the account (scope user:U, secret:user:U)
	Project      string    // the workload's project, or the project scope (project:P, secret:project:P, explain's …,project:P, a group assigned to P)
	Projects     []string  // any of these projects, as Project (a project owner's own); empty: any
	Group        string    // the group scope (group:G), or among the groups a serve merged
	Action       string    // the record's action: serve, set, run, refuse, …
}

// Result is what Query found.
type Result struct {
	Records   []api.AuditRecord // the newest matches, oldest first
	Truncated bool              // more records matched than were returned
	Files     []string          // the files read, oldest first
	Lines     int64             // lines read
	Skipped   int64             // lines that are not records (torn, over MaxLine)
}

// MaxLine is the longest line read; a longer one is skipped.
const MaxLine = 4 << 20

// Query reads the log at path and its rotated files (see the package doc)
// and returns the newest limit records that match f, oldest first.
func Query(path string, f Filter, limit int) (*Result, error) {
	files, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, lf := range files {
			lf.f.Close()
		}
	}()
	m := newMatcher(f)
	ring := &ring{max: max(limit, 1)}
	res := &Result{}
	// A file that starts before since holds every record older files
	// could match: those are not read.
	first := 0
	if m.since != nil {
		for i := len(files) - 1; i > 0; i-- {
			if t, ok := firstTime(files[i]); ok && t.Before(f.Since) {
				first = i
				break
			}
		}
	}
	for _, lf := range files[first:] {
		res.Files = append(res.Files, lf.name)
		past, err := m.scan(lf, ring, res)
		if err != nil {
			return nil, fmt.Errorf("read audit log %s: %w", lf.name, err)
		}
		if past {
			break
		}
	}
	for _, line := range ring.inOrder() {
		var r api.AuditRecord
		if json.Unmarshal(line, &r) != nil || !m.exact(&r) {
			continue
		}
		res.Records = append(res.Records, r)
	}
	res.Truncated = ring.dropped > 0
	return res, nil
}

// firstTime is the time of a file's first record, read from its start;
// the file is left at its start again.
func firstTime(lf logFile) (time.Time, bool) {
	defer lf.f.Seek(0, io.SeekStart)
	var rd io.Reader = lf.f
	if lf.gz {
		zr, err := gzip.NewReader(lf.f)
		if err != nil {
			return time.Time{}, false
		}
		defer zr.Close()
		rd = zr
	}
	line, _ := bufio.NewReaderSize(rd, 4096).ReadSlice('\n')
	if !bytes.HasPrefix(line, timePrefix) {
		return time.Time{}, false
	}
	rest := line[len(timePrefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:end]))
	return t, err == nil
}

// logFile is one file of the log, opened.
type logFile struct {
	name string
	f    *os.File
	gz   bool
}

// Open opens path and its rotated files, newest first as it goes, and
// returns them oldest first. A missing path with no rotated files is no
// error: nothing has been logged yet.
func Open(path string) ([]logFile, error) {
	type key struct{ dev, ino uint64 }
	seen := map[key]bool{}
	var out []logFile
	add := func(name string, gz bool) (bool, error) {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return false, err
		}
		k := key{uint64(st.Dev), st.Ino}
		if seen[k] {
			f.Close()
			return true, nil
		}
		seen[k] = true
		out = append(out, logFile{name: name, f: f, gz: gz})
		return true, nil
	}
	fail := func(err error) ([]logFile, error) {
		for _, lf := range out {
			lf.f.Close()
		}
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if _, err := add(path, false); err != nil {
		return fail(err)
	}
	for n := 1; ; n++ {
		base := path + "." + strconv.Itoa(n)
		ok, err := add(base, false)
		if err != nil {
			return fail(err)
		}
		if !ok {
			if ok, err = add(base+".gz", true); err != nil {
				return fail(err)
			}
		}
		if !ok {
			break
		}
	}
	slices.Reverse(out)
	return out, nil
}

// ring keeps the newest max lines handed to it.
type ring struct {
	max     int
	lines   [][]byte
	next    int // where the next line goes once full
	dropped int64
}

func (r *ring) add(line []byte) {
	if len(r.lines) < r.max {
		r.lines = append(r.lines, append([]byte(nil), line...))
		return
	}
	r.dropped++
	r.lines[r.next] = append(r.lines[r.next][:0], line...)
	r.next = (r.next + 1) % r.max
}

func (r *ring) inOrder() [][]byte {
	return append(r.lines[r.next:len(r.lines):len(r.lines)], r.lines[:r.next]...)
}

// matcher tests lines against a Filter on their bytes.
type matcher struct {
	f            Filter
	since, until []byte // the bounds' seconds, as the log writes them
	stop         []byte // until plus a margin: a line past it ends the query
	projectNames []string
	fields       bool // a filter on fields: lines are scanned (fieldsOf)
}

func newMatcher(f Filter) *matcher {
	m := &matcher{f: f}
	if !f.Since.IsZero() {
		m.since = []byte(f.Since.UTC().Format("2006-01-02T15:04:05"))
	}
	if !f.Until.IsZero() {
		m.until = []byte(f.Until.UTC().Format("2006-01-02T15:04:05"))
		// Records are stamped before they are queued, so concurrent
		// writers may land a little out of order: stop only well past.
		m.stop = []byte(f.Until.UTC().Add(stopMargin).Format("2006-01-02T15:04:05"))
	}
	m.projectNames = f.Projects
	if f.Project != "" {
		m.projectNames = []string{f.Project}
	}
	m.fields = f.User != "" || len(m.projectNames) > 0 || f.Group != "" || f.Action != ""
	return m
}

// record is the fields of a line a filter looks at: raw JSON string
// contents (escapes left in: a name never has one), groups the raw
// inside of its array.
type record struct {
	action, user, scope, name, workloadUser, project, groups []byte
}

// fieldsOf walks the top-level fields of a line the agent wrote: one
// object, keys without escapes, values strings, numbers, or (hmacs,
// groups) an object or array of names and hex that holds no brace or
// bracket. Each step is an IndexByte, so a line costs a few dozen of them
// however long its values are. A line that is not such an object yields
// what was read before the trouble.
func fieldsOf(line []byte, r *record) {
	i := 1 // past '{'
	for i < len(line) {
		if line[i] != '"' {
			return
		}
		k := bytes.IndexByte(line[i+1:], '"')
		if k < 0 || i+k+3 > len(line) || line[i+k+2] != ':' {
			return
		}
		key := line[i+1 : i+1+k]
		i += k + 3 // past `"key":`
		var val []byte
		switch line[i] {
		case '"':
			end := stringEnd(line, i+1)
			if end < 0 {
				return
			}
			val = line[i+1 : end]
			i = end + 1
		case '{', '[':
			close := byte('}')
			if line[i] == '[' {
				close = ']'
			}
			end := bytes.IndexByte(line[i:], close)
			if end < 0 {
				return
			}
			val = line[i+1 : i+end]
			i += end + 1
		default:
			end := bytes.IndexAny(line[i:], ",}")
			if end < 0 {
				return
			}
			i += end
		}
		switch string(key) { // no allocation: compared in place
		case "action":
			r.action = val
		case "user":
			r.user = val
		case "scope":
			r.scope = val
		case "name":
			r.name = val
		case "workload_user":
			r.workloadUser = val
		case "project":
			r.project = val
		case "groups":
			r.groups = val
		}
		if i >= len(line) || line[i] != ',' {
			return
		}
		i++
	}
}

// stringEnd is the index of the quote that closes the string starting at
// from: the first one not escaped by an odd run of backslashes.
func stringEnd(line []byte, from int) int {
	for {
		q := bytes.IndexByte(line[from:], '"')
		if q < 0 {
			return -1
		}
		q += from
		n := 0
		for j := q - 1; j >= from && line[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		from = q + 1
	}
}

var timePrefix = []byte(`{"time":"`)

// Time bounds, as when returns them: in range, before it, after it,
// and so far after that no later line can be in range.
const (
	inRange = iota
	before
	after
	past
)

// stopMargin is how far past until a line must be to end the query.
const stopMargin = 5 * time.Second

// when places a line against the time bounds.
func (m *matcher) when(line []byte) int {
	if m.since == nil && m.until == nil {
		return inRange
	}
	if !bytes.HasPrefix(line, timePrefix) {
		return before // not a record the agent wrote; dropped below anyway
	}
	rest := line[len(timePrefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 19 {
		return before
	}
	ts := rest[:end]
	secs := ts[:19]
	if m.since != nil {
		switch c := bytes.Compare(secs, m.since); {
		case c < 0:
			return before
		case c == 0 && m.parse(ts).Before(m.f.Since):
			return before
		}
	}
	if m.until != nil {
		switch c := bytes.Compare(secs, m.until); {
		case c > 0 && bytes.Compare(secs, m.stop) > 0:
			return past
		case c > 0:
			return after
		case c == 0 && m.parse(ts).After(m.f.Until):
			return after
		}
	}
	return inRange
}

func (m *matcher) parse(ts []byte) time.Time {
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return time.Time{}
	}
	return t
}

// match tests a line's fields.
func (m *matcher) match(line []byte) bool {
	if !m.fields {
		return true
	}
	var r record
	fieldsOf(line, &r)
	return m.matchRecord(&r)
}

func (m *matcher) matchRecord(r *record) bool {
	f := m.f
	if f.Action != "" && string(r.action) != f.Action {
		return false
	}
	if f.User != "" && string(r.user) != f.User && string(r.workloadUser) != f.User &&
		!scopeIs(r.scope, "user:", f.User) && !scopeIs(r.scope, "secret:user:", f.User) {
		return false
	}
	if len(m.projectNames) > 0 && !m.ofProject(r) {
		return false
	}
	if f.Group != "" && !scopeIs(r.scope, "group:", f.Group) && !inList(r.groups, f.Group) {
		return false
	}
	return true
}

// ofProject: the record is about one of the projects: a workload of it,
// its variables, secrets or groups, explain in it, a group assigned to it.
func (m *matcher) ofProject(r *record) bool {
	assign := string(r.action) == "assign" || string(r.action) == "unassign"
	for _, p := range m.projectNames {
		if string(r.project) == p || scopeIs(r.scope, "project:", p) || scopeIs(r.scope, "secret:project:", p) ||
			bytes.HasSuffix(r.scope, []byte(",project:"+p)) || (assign && string(r.name) == p) {
			return true
		}
	}
	return false
}

// inList: name is one of the strings of a raw JSON array's inside.
func inList(list []byte, name string) bool {
	for len(list) > 0 {
		i := bytes.IndexByte(list, '"')
		if i < 0 {
			return false
		}
		j := bytes.IndexByte(list[i+1:], '"')
		if j < 0 {
			return false
		}
		if string(list[i+1:i+1+j]) == name {
			return true
		}
		list = list[i+j+2:]
	}
	return false
}

// exact checks a decoded record against the filter, as match did its
// bytes: a line whose fields the scan misread is not returned.
func (m *matcher) exact(r *api.AuditRecord) bool {
	groups, _ := json.Marshal(r.Groups)
	rec := record{action: []byte(r.Action), user: []byte(r.User), scope: []byte(r.Scope), name: []byte(r.Name),
		workloadUser: []byte(r.WorkloadUser), project: []byte(r.Project), groups: bytes.Trim(groups, "[]")}
	return !m.fields || m.matchRecord(&rec)
}

// scopeIs: scope is kind+name, or explain's "kind+name,…".
func scopeIs(scope []byte, kind, name string) bool {
	n := len(kind) + len(name)
	if len(scope) < n || string(scope[:len(kind)]) != kind || string(scope[len(kind):n]) != name {
		return false
	}
	return len(scope) == n || scope[n] == ','
}

// scan reads one file's lines into the ring. past says it met a line so
// far past the range that nothing after it can match.
func (m *matcher) scan(lf logFile, r *ring, res *Result) (bool, error) {
	var rd io.Reader = lf.f
	if lf.gz {
		zr, err := gzip.NewReader(lf.f)
		if err != nil {
			return false, err
		}
		defer zr.Close()
		rd = zr
	}
	br := bufio.NewReaderSize(rd, 256<<10)
	var long []byte // a line longer than the buffer, gathered
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(line) <= MaxLine {
				long = append(long, line...)
			} else {
				long = long[:0:0]
				res.Skipped++
				for errors.Is(err, bufio.ErrBufferFull) { // drop the rest of the line
					_, err = br.ReadSlice('\n')
				}
				if err != nil && err != io.EOF {
					return false, err
				}
				if err == io.EOF {
					return false, nil
				}
				continue
			}
			continue
		}
		if len(long) > 0 {
			if len(long)+len(line) > MaxLine {
				line = nil
				res.Skipped++
			} else {
				line = append(long, line...)
			}
			long = long[:0]
		}
		if len(line) > 0 {
			res.Lines++
			line = bytes.TrimSuffix(line, []byte{'\n'})
			switch m.when(line) {
			case inRange:
				if m.match(line) {
					r.add(line)
				}
			case past:
				// Lines are in time order (within the margin) and files
				// oldest first: nothing later can be in range.
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}
