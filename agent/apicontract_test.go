package agent

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/envlet/envlet/agent/api"
)

// TestAPIContract drives every kind of admin reply through the real handler
// and decodes it into its agent/api type with unknown fields refused, so a
// field the agent adds or renames without agent/api (the contract the CLI
// and the console import) fails here.
func TestAPIContract(t *testing.T) {
	a := apiAgent(t)
	h := a.adminHandler()
	admin := &caller{peer: peer{uid: 0}, user: "root", admin: true}
	uid := uint32(4242)
	for _, step := range []struct {
		method, target string
		body           any
		status         int
		reply          any // a pointer to the api type, nil for no body
	}{
		{"GET", "/v1/whoami", nil, 200, new(api.Whoami)},
		{"POST", "/v1/projects", api.ProjectCreate{Name: "fraud"}, 201, new(api.Project)},
		{"POST", "/v1/projects/fraud/members", api.MemberAdd{User: "alice", Owner: true}, 200, new(api.Project)},
		{"GET", "/v1/projects", nil, 200, new([]api.Project)},
		{"POST", "/v1/groups", api.GroupCreate{Name: "base"}, 201, new(api.Group)},
		{"PUT", "/v1/groups/base/env/G", api.VariableWrite{Value: apiPtr("g")}, 200, new(api.Variable)},
		{"POST", "/v1/groups/base/assign", api.GroupProjects{Projects: []string{"fraud"}}, 200, new(api.Group)},
		{"GET", "/v1/groups/base?reveal=1", nil, 200, new(api.Group)},
		{"GET", "/v1/groups", nil, 200, new([]api.Group)},
		{"PUT", "/v1/projects/fraud/groups", api.ProjectGroups{Groups: []string{"base"}}, 200, new(api.Project)},
		{"PUT", "/v1/projects/fraud/env/P", api.VariableWrite{Value: apiPtr("p"), Secret: apiPtr(true)}, 200, new(api.Variable)},
		{"GET", "/v1/projects/fraud/env", nil, 200, new([]api.Variable)},
		{"POST", "/v1/users/me/env/A", api.VariableWrite{Value: apiPtr("a")}, 201, new(api.Variable)},
		{"GET", "/v1/users/me/env/A", nil, 200, new(api.Variable)},
		{"GET", "/v1/users/me/env", nil, 200, new([]api.Variable)},
		{"PUT", "/v1/users/me/secrets/S", api.SecretWrite{Value: "s"}, 200, new(api.Secret)},
		{"PUT", "/v1/users/me/env/FS", api.VariableWrite{FromSecret: "S"}, 200, new(api.Variable)},
		{"GET", "/v1/users/me/secrets", nil, 200, new([]api.Secret)},
		{"GET", "/v1/secrets", nil, 200, new([]api.SecretListed)},
		{"GET", "/v1/users/me/secrets/S?reveal=1", nil, 200, new(api.Secret)},
		{"POST", "/v1/audit/hmac", api.HMACRequest{Value: "x"}, 200, new(api.HMACReply)},
		{"POST", "/v1/workloads", api.Registration{ID: "w1", User: "root", Project: "fraud", Match: api.Match{UID: &uid}}, 201, new(api.Registered)},
		{"GET", "/v1/workloads", nil, 200, new([]api.Workload)},
		{"GET", "/v1/explain?workload=w1", nil, 200, new([]api.Explained)},
		{"POST", "/v1/explain", api.ExplainPreview{Project: "fraud", Execution: map[string]string{"X": "1", "P": ""}}, 200, new([]api.Explained)},
		{"GET", "/v1/projects/fraud/env?groups=1", nil, 200, new([]api.Variable)},
		{"POST", "/v1/groups/base/assign", api.GroupProjects{AllProjects: true}, 200, new(api.Group)},
		{"POST", "/v1/groups/base/unassign", api.GroupProjects{AllProjects: true}, 200, new(api.Group)},
		{"GET", "/v1/status", nil, 200, new(api.Status)},
		{"DELETE", "/v1/users/me/env", nil, 200, new(api.DeleteAllReply)},
		{"GET", "/v1/users/me/env/A", nil, 404, new(api.ErrorReply)},
	} {
		var body []byte
		if step.body != nil {
			var err error
			if body, err = json.Marshal(step.body); err != nil {
				t.Fatal(err)
			}
		}
		w := call(h, admin, step.method, step.target, body)
		if w.Code != step.status {
			t.Fatalf("%s %s: status %d, want %d: %s", step.method, step.target, w.Code, step.status, w.Body)
		}
		dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(step.reply); err != nil {
			t.Errorf("%s %s: reply does not match %T: %v\n%s", step.method, step.target, step.reply, err, w.Body)
			continue
		}
		if reflect.ValueOf(step.reply).Elem().IsZero() {
			t.Errorf("%s %s: reply decoded to the zero %T: %s", step.method, step.target, step.reply, w.Body)
		}
		if er, ok := step.reply.(*api.ErrorReply); ok && (er.Error == nil || er.Error.Code != api.CodeNotFound) {
			t.Errorf("%s %s: error reply %s, want %s", step.method, step.target, w.Body, api.CodeNotFound)
		}
	}
}

func apiPtr[T any](v T) *T { return &v }
