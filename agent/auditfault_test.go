package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// TestAuditReopen: the log is renamed away and reopened twenty times while
// eight goroutines write: every record is whole, in exactly one file.
func TestAuditReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l := testAuditLog(t, path)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				r := auditRecord{Action: "serve", Workload: "w" + strconv.Itoa(g), Revision: int64(i + 1)}
				if i%50 == 0 {
					r.Action = "refuse" // waits for its line
				}
				l.write(r, nil, "")
			}
		})
	}
	files := []string{path}
	for n := range 20 {
		moved := path + "." + strconv.Itoa(n)
		if err := os.Rename(path, moved); err != nil {
			t.Fatal(err)
		}
		files = append(files, moved)
		if err := l.reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	l.Close()
	seen := map[string]int{}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Fatalf("%s ends inside a record", f)
		}
		for _, r := range readAuditFile(t, f) {
			seen[r.Workload+"/"+strconv.FormatInt(r.Revision, 10)]++
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct records across the files, want %d", len(seen), writers*each)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("record %s is in the files %d times", k, n)
		}
	}
}

// TestAuditWriteFails: on a device that is always full (/dev/full) a
// record other than serve returns the write's error (so an admin change
// can be refused), a serve does not wait and is counted as lost; once the
// log can be written again an audit-lost record says how many went.
func TestAuditWriteFails(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	l := testAuditLog(t, "/dev/full")
	if err := l.write(auditRecord{Action: "change", Request: "PUT /v1/x"}, nil, ""); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write to a full device: %v, want ENOSPC", err)
	}
	if e := storageError(l.write(auditRecord{Action: "refuse"}, nil, ""), "the audit log", "nothing was changed"); e == nil || e.Code != CodeStorageFull {
		t.Fatalf("storage error: %v", e)
	}
	for range 3 {
		if err := l.write(auditRecord{Action: "serve", Workload: "w"}, nil, ""); err != nil {
			t.Fatalf("a serve record waited: %v", err)
		}
	}
	l.write(auditRecord{Action: "refuse"}, nil, "") // after the serves
	st := map[string]any{}
	l.status(st)
	if st["audit_lost_records"] != int64(6) || st["audit_error"] != "no space left on device" {
		t.Fatalf("status %v", st)
	}
	// Room again (a writable file at the path): the gap is said first.
	path := filepath.Join(t.TempDir(), "audit.log")
	l.path = path
	if err := l.reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.write(auditRecord{Action: "set", Name: "X"}, nil, ""); err != nil {
		t.Fatal(err)
	}
	recs := readAuditFile(t, path)
	if len(recs) != 2 || recs[0].Action != "audit-lost" || recs[0].Lost != 6 || recs[1].Action != "set" {
		t.Fatalf("records after the fault: %+v", recs)
	}
	st = map[string]any{}
	l.status(st)
	if st["audit_error"] != nil {
		t.Fatalf("status still says the log fails: %v", st)
	}
}
