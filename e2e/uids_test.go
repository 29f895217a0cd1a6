package e2e

import (
	"errors"
	"os/user"
	"strconv"
	"sync"
	"testing"
)

// Tests run programs as other uids. Which uids are real accounts differs
// from machine to machine (a node with directory users may have any of
// them), and the agent names a uid by its passwd entry, else by its number;
// so a test never hard-codes one. freeUIDs hands out uids that have no
// passwd entry and no group entry of the same number at run time (the
// tests use the uid as the gid too), each at most once per run.
var uidPool struct {
	sync.Mutex
	next uint32
}

// firstTestUID is where the search starts: above the usual system and
// first-user ranges, below the 65534 of nobody.
const firstTestUID = 4300

// freeUIDs returns n distinct uids with no passwd entry and no group of the
// same number. The agent gives such a uid the name uidName(uid).
func freeUIDs(t testing.TB, n int) []uint32 {
	t.Helper()
	uidPool.Lock()
	defer uidPool.Unlock()
	if uidPool.next == 0 {
		uidPool.next = firstTestUID
	}
	out := make([]uint32, 0, n)
	for len(out) < n {
		id := uidPool.next
		if id >= 65534 {
			t.Fatalf("no free uid left below 65534 (wanted %d more)", n-len(out))
		}
		uidPool.next++
		s := strconv.FormatUint(uint64(id), 10)
		// Anything but "no such entry" (a directory that cannot be
		// reached, say) counts as taken.
		var noUser user.UnknownUserIdError
		if _, err := user.LookupId(s); !errors.As(err, &noUser) {
			continue
		}
		var noGroup user.UnknownGroupIdError
		if _, err := user.LookupGroupId(s); !errors.As(err, &noGroup) {
			continue
		}
		out = append(out, id)
	}
	return out
}

// freeUID is freeUIDs(t, 1)[0].
func freeUID(t testing.TB) uint32 { return freeUIDs(t, 1)[0] }

// uidName is the name the agent gives a uid without a passwd entry: its
// number.
func uidName(uid uint32) string { return strconv.FormatUint(uint64(uid), 10) }

// uid is the uid a test's role plays against this agent ("alice", "w1",
// "flooder"): a free uid (freeUIDs) given on first use and the same after,
// so a fixture and the test that uses it agree without a constant.
func (a *agentProc) uid(role string) uint32 {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.uids[role]; ok {
		return id
	}
	if a.uids == nil {
		a.uids = map[string]uint32{}
	}
	id := freeUID(a.t)
	a.uids[role] = id
	return id
}
