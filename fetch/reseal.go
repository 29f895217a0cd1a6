package fetch

import (
	"context"
	"errors"
	"fmt"
)

// resealPasses bounds Reseal: each pass re-reads the store and reseals what
// is still under an old key (records that writers changed meanwhile); it
// ends with a pass that finds nothing to do.
const resealPasses = 5

// compacter is a backend that seals its own files as a whole (Local):
// Compact rewrites them under the key ring's primary key.
type compacter interface {
	Compact(ctx context.Context) error
}

// ResealResult counts what Reseal did.
type ResealResult struct {
	Records  int // records in the store at the last pass
	Resealed int // records written again under the primary key
	Passes   int
}

// Reseal re-encrypts, through b, every record that is not sealed with the
// primary key of keys, with the record's key as additional data (as the
// agent seals them). Each record is written by its own transaction on the
// condition that it did not change since it was read, so agents may keep
// writing meanwhile: a record they changed is left to them (an agent whose
// key ring has the same primary seals with it) and checked again in the
// next pass. The outcomes:
//
//   - every record is under the primary: the counts, nil. A backend with
//     a Compact method (the local store) is compacted first, so its files
//     are sealed with the primary too.
//   - a record does not open (a key missing from keys, or tampered): an
//     error naming the record key, nothing more written.
//   - the store fails (unavailable): that error; what was resealed stays
//     resealed, and running Reseal again goes on.
//   - records still under an old key after resealPasses passes (writers
//     with an old primary): an error saying how many.
//
// The plaintext of each record is in memory only between its open and its
// seal, and cleared after.
func Reseal(ctx context.Context, b Backend, keys *Keyring) (ResealResult, error) {
	var res ResealResult
	for res.Passes < resealPasses {
		res.Passes++
		s, err := b.Snapshot(ctx)
		if err != nil {
			return res, fmt.Errorf("reseal: %w", err)
		}
		res.Records = len(s.KVs)
		primary := keys.PrimaryID()
		left, did := 0, 0
		for _, kv := range s.KVs {
			if id, ok := SealedKeyID(kv.Value); ok && id == primary {
				continue
			}
			plain, err := keys.Open(nil, kv.Value, kv.Key)
			if err != nil {
				return res, fmt.Errorf("reseal %s: %w", kv.Key, err)
			}
			sealed := keys.Seal(nil, plain, kv.Key)
			clear(plain)
			_, err = b.Commit(ctx, Txn{
				Conds: []Cond{{Key: kv.Key, ModRev: kv.ModRev}},
				Ops:   []Op{{Key: kv.Key, Value: sealed}},
			})
			switch {
			case errors.Is(err, ErrConflict):
				left++ // changed since the read: look again next pass
			case err != nil:
				return res, fmt.Errorf("reseal %s: %w", kv.Key, err)
			default:
				res.Resealed++
				did++
			}
		}
		if left == 0 && did == 0 {
			// A pass that found every record under the primary. A store
			// that keeps its own files sealed (the local store's state
			// file and log) rewrites them under it too, so the old key
			// can go.
			if c, ok := b.(compacter); ok {
				if err := c.Compact(ctx); err != nil {
					return res, fmt.Errorf("reseal: %w", err)
				}
			}
			return res, nil
		}
	}
	return res, fmt.Errorf("reseal: records kept changing under an old key after %d passes; is every agent's key ring primary %s?", resealPasses, keys.PrimaryID())
}
