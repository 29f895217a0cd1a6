package agent

import (
	"github.com/envlet/envlet/agent/internal/regdir"
)

// watchWorkloadsDir keeps the file registrations in step with workloads.d
// (package regdir); this file is the agent's side: parsing a file, and
// putting and removing its workload under a.mu.
func (a *Agent) watchWorkloadsDir() (*regdir.Watcher[*Registration], error) {
	return regdir.New(regdir.Config[*Registration]{
		Dir:          a.cfg.WorkloadsDir,
		MaxFileBytes: maxRegistrationBytes,
		Parse: func(b []byte) (*Registration, string, error) {
			reg, err := parseRegistration(b)
			if err != nil {
				return nil, "", err
			}
			return reg, reg.ID, nil
		},
		Registry: dirRegistry{a},
		Log:      a.log,
	})
}

// dirRegistry is the agent's registry as regdir changes it.
type dirRegistry struct{ a *Agent }

func (r dirRegistry) Update(fn func(regdir.Tx[*Registration])) {
	r.a.mu.Lock()
	defer r.a.mu.Unlock()
	fn(dirTx(r))
}

// dirTx is used only inside Update: a.mu is held.
type dirTx struct{ a *Agent }

func (t dirTx) Remove(id string) { t.a.removeWorkload(id, sourceFile) }

func (t dirTx) Put(reg *Registration, path string) error {
	if err := t.a.putWorkload(reg, sourceFile); err != nil {
		return err
	}
	w := t.a.workloads[reg.ID]
	w.path, w.dates = path, fileDates(path)
	return nil
}
