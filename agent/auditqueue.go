package agent

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// maxAuditQueue bounds the bytes of audit lines waiting for the writer. A
// record that would go over waits for room (back-pressure: the serving
// goroutine blocks, its peer already has its reply); none is dropped. A
// variable for tests.
var maxAuditQueue = 1 << 20

// auditQueue is the audit log's writer: one goroutine that takes every
// line queued since its last write and writes them with one write(2), and
// sends each to journald when that is on. There is no timer: the writer
// sleeps until a line comes, so an idle agent writes a line at once, and a
// busy one writes what accumulated while the previous write ran.
type auditQueue struct {
	l    *auditLog
	mu   sync.Mutex
	work sync.Cond // the writer waits here for lines, or close
	done sync.Cond // put waits here for room, or for its line to be written

	buf     []byte        // lines queued, not yet taken by the writer
	marks   []auditMark   // one per line in buf when the journal is on
	spare   []byte        // the writer's last batch, reused
	spareM  []auditMark   //
	queued  uint64        // lines ever queued
	written uint64        // lines the writer has finished with
	closed  bool          // close was called: put writes its line itself
	peak    int           // the most bytes queued at once (tests)
	exited  chan struct{} // closed when the writer has written everything and returned

	errReports everyGate // a failed write is reported at most once per refuseEvery

	// Writes that fail (a full or read-only disk) are cut off the file
	// again, never left half written; a put that waits for its line finds
	// here whether it was written: nil, or the write's error.
	waiters map[uint64]error // by sequence number
	lost    int64            // records lost since the last audit-lost record went out (fileMu)
	lastErr string           // the last write error, "" once a write succeeds again (fileMu)

	lostTotal atomic.Int64 // records lost since start (status)
}

// auditMark is where a line ends in the queue, and its action, for the
// journal's ENVLET_AUDIT_ACTION field.
type auditMark struct {
	end    int
	action string
}

func newAuditQueue(l *auditLog) *auditQueue {
	q := &auditQueue{l: l, exited: make(chan struct{}), waiters: map[uint64]error{}}
	q.work.L = &q.mu
	q.done.L = &q.mu
	go q.run()
	return q
}

// put queues line (which it copies) and, when wait is set, returns once
// the writer has written it, with the write's error (nil when the line is
// in the file). It blocks while the queue is full. Once close has been
// called, put writes the line itself.
func (q *auditQueue) put(line []byte, action string, wait bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.buf) > 0 && len(q.buf)+len(line) > maxAuditQueue && !q.closed {
		q.done.Wait()
	}
	if q.closed {
		return q.writeBatch(line, []auditMark{{len(line), action}}, 1)
	}
	if len(q.buf)+len(line) > cap(q.buf) {
		// Grow by hand: append's doubling would go past the bound, and
		// the two buffers that take turns are kept for good.
		n := min(max(2*cap(q.buf), 64<<10), maxAuditQueue)
		nb := make([]byte, len(q.buf), max(n, len(q.buf)+len(line)))
		copy(nb, q.buf)
		q.buf = nb
	}
	q.buf = append(q.buf, line...)
	q.peak = max(q.peak, len(q.buf))
	if q.l.journal {
		q.marks = append(q.marks, auditMark{len(q.buf), action})
	}
	q.queued++
	seq := q.queued
	q.work.Signal()
	if !wait {
		return nil
	}
	q.waiters[seq] = nil
	for q.written < seq {
		q.done.Wait()
	}
	err := q.waiters[seq]
	delete(q.waiters, seq)
	return err
}

// run is the writer: it takes the queued lines in one batch, writes them,
// and starts again, until close has been called and nothing is queued.
func (q *auditQueue) run() {
	defer close(q.exited)
	q.mu.Lock()
	for {
		for len(q.buf) == 0 && !q.closed {
			q.work.Wait()
		}
		if len(q.buf) == 0 {
			q.mu.Unlock()
			return
		}
		batch, marks, from, upTo := q.buf, q.marks, q.written, q.queued
		q.buf, q.marks = q.spare[:0], q.spareM[:0]
		q.done.Broadcast() // room
		q.mu.Unlock()

		err := q.writeBatch(batch, marks, int64(upTo-from))

		q.mu.Lock()
		if err != nil {
			for seq := range q.waiters { // the few admin records waiting
				if from < seq && seq <= upTo {
					q.waiters[seq] = err
				}
			}
		}
		q.written = upTo
		// The batch's buffer takes the next turn (put bounds its size).
		q.spare, q.spareM = batch[:0], marks[:0]
		q.done.Broadcast() // written
	}
}

// writeBatch writes one batch of n records and returns the file's error.
// A write that fails is cut off again, so the file never holds half a
// record; the batch's records are lost (counted, and said in an
// audit-lost record once a write succeeds again).
func (q *auditQueue) writeBatch(batch []byte, marks []auditMark, n int64) error {
	l := q.l
	if l.journal {
		start := 0
		for _, m := range marks {
			// The whole record is the message; the action is a field of
			// its own so `journalctl ENVLET_AUDIT_ACTION=refuse` finds
			// refusals.
			journal.Send(string(batch[start:m.end-1]), journal.PriInfo, map[string]string{
				"SYSLOG_IDENTIFIER":   "envletd-audit",
				"ENVLET_AUDIT_ACTION": m.action,
			})
			start = m.end
		}
	}
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	if l.f == nil {
		return nil
	}
	if q.lost > 0 {
		// Say in the log itself where it has a hole.
		gap := appendAuditJSON(nil, &auditRecord{Time: time.Now().UTC().Format(time.RFC3339Nano), Action: "audit-lost", Lost: q.lost,
			Reason: "records could not be written to the audit log: " + q.lastErr})
		if err := l.append(append(gap, '\n')); err != nil {
			return q.failedWrite(err, n, len(batch))
		}
		q.lost = 0
	}
	if err := l.append(batch); err != nil {
		return q.failedWrite(err, n, len(batch))
	}
	if q.lastErr != "" && l.log != nil {
		l.log.Info("audit log writable again", "path", l.path)
	}
	q.lastErr = ""
	return nil
}

// failedWrite counts and reports a batch of n records that could not be
// written.
func (q *auditQueue) failedWrite(err error, n int64, size int) error {
	q.lost += n
	q.lostTotal.Add(n)
	q.lastErr = errText(err)
	if q.l.log != nil && q.errReports.pass() {
		q.l.log.Error("write audit log; records are lost", "path", q.l.path, "error", err, "bytes", size, "lost_since_last_report", q.lost)
	}
	return err
}

// close writes what is queued and stops the writer; a put after it writes
// its line itself.
func (q *auditQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.work.Signal()
	q.done.Broadcast()
	q.mu.Unlock()
	<-q.exited
}

// errText is an error's last part, "no space left on device" rather than
// "write /var/log/envlet/audit.log: no space left on device".
func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}
