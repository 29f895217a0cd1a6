package agent

import (
	"errors"
	"fmt"

	"github.com/envlet/envlet/fetch"
)

// openBackend opens the configured source: etcd when endpoints are given,
// else the local encrypted store.
func (a *Agent) openBackend(keys *fetch.Keyring) (fetch.Backend, error) {
	if len(a.cfg.EtcdEndpoints) > 0 {
		return nil, errors.New("open backend: the etcd backend is not available in this build yet")
	}
	b, err := fetch.OpenLocal(a.cfg.StateDir, keys)
	if err != nil {
		return nil, fmt.Errorf("open local store: %w", err)
	}
	return b, nil
}
