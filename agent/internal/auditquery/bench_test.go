package auditquery

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envlet/envlet/agent/api"
)

// The benchmark log: benchLines records spread over audit.log.2.gz,
// audit.log.1 and audit.log, nine serves in ten (two HMACs each, the
// workload's user, project and groups), the rest admin writes; 1,000
// users, 100 projects, 20 groups, one record every 10 ms.
const benchLines = 2_000_000

var bench struct {
	once  sync.Once
	path  string
	bytes int64
	err   error
}

func benchLog(b *testing.B) string {
	bench.once.Do(func() {
		dir, err := os.MkdirTemp("", "auditq")
		if err != nil {
			bench.err = err
			return
		}
		bench.path = filepath.Join(dir, "audit.log")
		names := []string{bench.path + ".2.gz", bench.path + ".1", bench.path}
		per := benchLines / len(names)
		hm := "f3b1c0de" + string(bytes.Repeat([]byte("0a"), 28))
		n := 0
		for i, name := range names {
			f, err := os.Create(name)
			if err != nil {
				bench.err = err
				return
			}
			var w io.Writer = f
			var zw *gzip.Writer
			if i == 0 {
				zw, _ = gzip.NewWriterLevel(f, gzip.BestSpeed)
				w = zw
			}
			bw := bufio.NewWriterSize(w, 1<<20)
			var buf []byte
			for j := 0; j < per; j++ {
				ts := t0.Add(time.Duration(n) * 10 * time.Millisecond).Format(time.RFC3339Nano)
				u, p, g := n%1000, n%100, n%20
				buf = buf[:0]
				if n%10 != 0 {
					buf = fmt.Appendf(buf, `{"time":%q,"action":"serve","uid":%d,"user":"u%d","pid":%d,"scope":"workload:w%d","workload":"w%d","revision":%d,"hmacs":{"DB_URL":%q,"LR":%q},"socket":"workload","workload_user":"u%d","project":"p%d","groups":["g%d","g%d"]}`,
						ts, 20000+u, u, 1000+n%30000, n%5000, n%5000, 1+n/1000, hm, hm, u, p, g, (g+1)%20)
				} else {
					buf = fmt.Appendf(buf, `{"time":%q,"action":"set","uid":0,"user":"root","pid":1,"scope":"project:p%d","name":"V%d","hmac":%q,"socket":"admin"}`, ts, p, n%64, hm)
				}
				buf = append(buf, '\n')
				bw.Write(buf)
				bench.bytes += int64(len(buf))
				n++
			}
			bw.Flush()
			if zw != nil {
				zw.Close()
			}
			f.Close()
		}
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.path
}

// BenchmarkQuery reads the whole benchmark log per query. Compare each
// case with NaiveDecode, the same user query done by decoding every line
// with encoding/json: the ratio is what testing bytes first buys.
//
//	go test -run '^$' -bench Query -benchtime 3x ./agent/internal/auditquery/
func BenchmarkQuery(b *testing.B) {
	path := benchLog(b)
	for _, c := range []struct {
		name string
		f    Filter
	}{
		{"User", Filter{User: "u417"}},
		{"ProjectOwner", Filter{Projects: []string{"p7", "p8"}}},
		{"GroupAndAction", Filter{Group: "g3", Action: "serve"}},
		{"LastMinute", Filter{Since: t0.Add(benchLines*10*time.Millisecond - time.Minute)}},
		{"Everything", Filter{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var r *Result
			cpu := cpuTime()
			for b.Loop() {
				var err error
				if r, err = Query(path, c.f, 1000); err != nil {
					b.Fatal(err)
				}
			}
			report(b, r.Lines, cpu)
		})
	}
	b.Run("NaiveDecode", func(b *testing.B) {
		var lines int64
		cpu := cpuTime()
		for b.Loop() {
			lines = naiveUser(b, path, "u417")
		}
		report(b, lines, cpu)
	})
}

// cpuTime is the process's user and system CPU time: on a machine others
// share, wall time per op says more about them than about the query.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, lines int64, cpu0 time.Duration) {
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
	per := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(lines)/per/1e6, "Mlines/s")
	b.ReportMetric(float64(bench.bytes)/per/1e6, "MB/s")
}

// naiveUser is the baseline: every line of every file decoded.
func naiveUser(b *testing.B, path, user string) int64 {
	files, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	var lines int64
	matched := 0
	for _, lf := range files {
		var rd io.Reader = lf.f
		if lf.gz {
			zr, _ := gzip.NewReader(lf.f)
			rd = zr
		}
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 1<<20), MaxLine)
		for sc.Scan() {
			lines++
			var r api.AuditRecord
			if json.Unmarshal(sc.Bytes(), &r) == nil && (r.User == user || r.WorkloadUser == user) {
				matched++
			}
		}
		lf.f.Close()
	}
	if matched == 0 {
		b.Fatal("naive: nothing matched " + strconv.Quote(user))
	}
	return lines
}

// TestMain removes the benchmark log (some 740 MB) once the run is over.
func TestMain(m *testing.M) {
	code := m.Run()
	if bench.path != "" {
		os.RemoveAll(filepath.Dir(bench.path))
	}
	os.Exit(code)
}
