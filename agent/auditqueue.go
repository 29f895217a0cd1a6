package agent

import (
	"sync"

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
}

// auditMark is where a line ends in the queue, and its action, for the
// journal's ENVLET_AUDIT_ACTION field.
type auditMark struct {
	end    int
	action string
}

func newAuditQueue(l *auditLog) *auditQueue {
	q := &auditQueue{l: l, exited: make(chan struct{})}
	q.work.L = &q.mu
	q.done.L = &q.mu
	go q.run()
	return q
}

// put queues line (which it copies) and, when wait is set, returns once
// the writer has written it. It blocks while the queue is full. Once close
// has been called, put writes the line itself.
func (q *auditQueue) put(line []byte, action string, wait bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.buf) > 0 && len(q.buf)+len(line) > maxAuditQueue && !q.closed {
		q.done.Wait()
	}
	if q.closed {
		q.writeBatch(line, []auditMark{{len(line), action}})
		return
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
	for wait && q.written < seq {
		q.done.Wait()
	}
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
		batch, marks, upTo := q.buf, q.marks, q.queued
		q.buf, q.marks = q.spare[:0], q.spareM[:0]
		q.done.Broadcast() // room
		q.mu.Unlock()

		q.writeBatch(batch, marks)

		q.mu.Lock()
		q.written = upTo
		// The batch's buffer takes the next turn (put bounds its size).
		q.spare, q.spareM = batch[:0], marks[:0]
		q.done.Broadcast() // written
	}
}

func (q *auditQueue) writeBatch(batch []byte, marks []auditMark) {
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
	if l.f == nil {
		return
	}
	// os.File.Write writes it all or says why not.
	if _, err := l.f.Write(batch); err != nil && l.log != nil {
		if q.errReports.pass() {
			l.log.Error("write audit log; records are lost", "error", err, "bytes", len(batch))
		}
	}
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
