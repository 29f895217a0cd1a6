package agent

import (
	"net/http"
	"sort"

	"github.com/envlet/envlet/agent/api"
)

// Whole views (issue 12 §4): what a user can read across the places it is
// kept, in one request.

// apiListAllSecrets is GET /v1/secrets: the caller's private secrets and
// those of every project they are a member or owner of; ?project=P only
// P's (a member's, owner's or admin's). An admin reaches other users'
// secrets and projects they are not in through the per-owner endpoints.
func (a *Agent) apiListAllSecrets(r *http.Request, c *caller) (any, int, error) {
	only := r.URL.Query().Get("project")
	if r.URL.Query().Has("project") {
		r.SetPathValue("p", only)
		if _, err := a.projectFor(r, c, "member"); err != nil {
			return nil, 0, err
		}
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := []api.SecretListed{}
	add := func(set varSet, visibility, project string) {
		for _, n := range set.sortedNames() {
			s := showSecret(r, n, set[n], false, false)
			out = append(out, api.SecretListed{Name: n, Kind: s.Kind, Size: s.Size, Visibility: visibility, Project: project})
		}
	}
	if only != "" {
		add(a.model.projSecrets[only], api.VisibilityProject, only)
		return out, 200, nil
	}
	add(a.model.userSecrets[c.user], api.VisibilityPrivate, "")
	for _, pn := range a.memberProjects(c.user) {
		add(a.model.projSecrets[pn], api.VisibilityProject, pn)
	}
	return out, 200, nil
}

// memberProjects lists the live projects user is a member or owner of,
// sorted. Called with a.mu held.
func (a *Agent) memberProjects(user string) []string {
	var out []string
	for pn, p := range a.model.projects {
		if p.metaRev != 0 && p.isMember(user) {
			out = append(out, pn)
		}
	}
	sort.Strings(out)
	return out
}
