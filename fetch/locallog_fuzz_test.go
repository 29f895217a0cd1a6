package fetch

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// logErr is every message scanLog may return: fixed words and numbers,
// and a key id (ids are not secret), never any other part of the input.
var logErr = regexp.MustCompile(`^(STORE_CORRUPT: (not an envlet log file|unsupported log format version [0-9]+|` +
	`record [0-9]+ at byte [0-9]+( is damaged, and an intact record follows at byte [0-9]+| has revision [0-9]+ after [0-9]+|` +
	`: decode log record: (truncated|revision out of range|no events|[0-9]+ trailing bytes|` +
	`event [0-9]+ (has an empty key|repeats a key|of unknown kind [0-9]+))))|` +
	`record [0-9]+ at byte [0-9]+: sealed with a key that is not in the key ring: "[A-Za-z0-9._:-]+")$`)

// fuzzLogSeeds are record bodies for FuzzLogRecord's corpus in code; more
// are in testdata/fuzz/FuzzLogRecord.
var fuzzLogSeeds = [][]byte{
	encodeLogBody(nil, 1, []Event{{Key: "a", Value: []byte("x")}}),
	encodeLogBody(nil, 7, []Event{{Key: "a", Value: []byte("x")}, {Key: "b", Deleted: true}, {Key: "c"}}),
}

// FuzzLogRecord feeds the log decoder three ways: data as a whole log file
// (header, framed and sealed records), data as the body of one correctly
// sealed record in a log, and data as a body alone. It must never panic;
// its errors must not quote the input; what it accepts must encode back to
// the same bytes (the format has one encoding per batch) and replay must
// take it without panic.
func FuzzLogRecord(f *testing.F) {
	for _, b := range fuzzLogSeeds {
		f.Add(b)
		rec, _ := frameRecord(fuzzKeys, b)
		f.Add(append([]byte(logHeader), rec...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// As a whole log.
		if recs, good, err := scanLog(fuzzKeys, data); err != nil {
			if !logErr.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
		} else {
			checkRecs(t, recs)
			if good > len(data) || (good < logHeaderLen && len(recs) > 0) {
				t.Fatalf("good part %d of %d bytes with %d records", good, len(data), len(recs))
			}
		}
		// As the body of a sealed record.
		rec, err := frameRecord(fuzzKeys, data)
		if err != nil {
			t.Fatal(err)
		}
		log := append([]byte(logHeader), rec...)
		recs, good, err := scanLog(fuzzKeys, log)
		if err != nil {
			if !logErr.MatchString(err.Error()) {
				t.Fatalf("unexpected error text %q", err)
			}
			return
		}
		if good != len(log) || len(recs) != 1 {
			t.Fatalf("an authentic record read as torn: %d of %d bytes, %d records", good, len(log), len(recs))
		}
		checkRecs(t, recs)
		if got := encodeLogBody(nil, recs[0].rev, recs[0].events); !bytes.Equal(got, data) {
			t.Fatalf("decode then encode differs:\n%x\n%x", data, got)
		}
		// As a body alone: the same outcome.
		if r, err := decodeLogBody(data); err != nil || r.rev != recs[0].rev || len(r.events) != len(recs[0].events) {
			t.Fatalf("body alone: %v", err)
		}
		// Replayed over an empty state and one that holds its keys.
		replay(&state{}, recs)
		var kvs []KV
		for _, e := range recs[0].events {
			kvs = append(kvs, KV{Key: e.Key, ModRev: 1})
		}
		slices.SortFunc(kvs, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
		st, _, err := replay(newState(recs[0].rev-1, kvs), recs)
		if err == nil && (st.rev != recs[0].rev || len(st.all()) != st.n) {
			t.Fatalf("replayed to rev %d with %d records, counted %d", st.rev, len(st.all()), st.n)
		}
	})
}

func checkRecs(t *testing.T, recs []logRecord) {
	t.Helper()
	for i, r := range recs {
		if r.rev < 1 || len(r.events) == 0 || (i > 0 && r.rev != recs[i-1].rev+1) {
			t.Fatalf("accepted an invalid record %d: rev %d, %d events", i, r.rev, len(r.events))
		}
		for _, e := range r.events {
			if e.Key == "" || e.ModRev != r.rev || (e.Deleted && e.Value != nil) {
				t.Fatalf("accepted an invalid event in record %d", i)
			}
		}
	}
}
