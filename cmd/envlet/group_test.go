package main

import "testing"

const group1 = `{"name":"base","projects":["fraud"],"count":2,"variables":[` +
	`{"name":"A","value":"1","secret":false,"masked":false},` +
	`{"name":"DB_PASSWORD","value":"********","secret":false,"masked":true}]}`

func TestGroup(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "Create", args: []string{"group", "create", "base"},
			status: 201, reply: `{"name":"base","projects":[],"count":0}`,
			want: stubRequest{Method: "POST", Path: "/v1/groups", Body: `{"name":"base"}`},
		},
		{
			name: "Set", args: []string{"group", "set", "base", "A", "1"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/groups/base/env/A", Body: `{"value":"1"}`},
		},
		{
			name: "SetSecretFlagFirst", args: []string{"group", "set", "--secret", "base", "A", "1"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/groups/base/env/A", Body: `{"value":"1","secret":true}`},
		},
		{
			name: "SetValueStdin", args: []string{"group", "set", "--value-stdin", "base", "A"}, stdin: "v\n",
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/groups/base/env/A", Body: `{"value":"v"}`},
		},
		{
			name: "SetMissingValue", args: []string{"group", "set", "base", "A"},
			errOut: "envlet: USAGE: group set: missing VALUE (or --value-stdin)\n", code: 2,
		},
		{
			name: "Unset", args: []string{"group", "unset", "base", "A"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/groups/base/env/A"},
		},
		{
			name: "Assign", args: []string{"group", "assign", "base", "fraud", "ml"},
			reply: group1,
			want:  stubRequest{Method: "POST", Path: "/v1/groups/base/assign", Body: `{"projects":["fraud","ml"]}`},
		},
		{
			name: "Unassign", args: []string{"group", "unassign", "base", "fraud"},
			reply: group1,
			want:  stubRequest{Method: "POST", Path: "/v1/groups/base/unassign", Body: `{"projects":["fraud"]}`},
		},
		{
			name: "AssignNoProject", args: []string{"group", "assign", "base"},
			errOut: "envlet: USAGE: group assign: give projects P… or --all-projects, not both\n", code: 2,
		},
		{
			name: "AssignAllAndProject", args: []string{"group", "assign", "base", "fraud", "--all-projects"},
			errOut: "envlet: USAGE: group assign: give projects P… or --all-projects, not both\n", code: 2,
		},
		{
			name: "AssignAll", args: []string{"group", "assign", "base", "--all-projects"},
			reply: `{"name":"base","all_projects":true,"projects":[],"count":0}`,
			want:  stubRequest{Method: "POST", Path: "/v1/groups/base/assign", Body: `{"projects":[],"all_projects":true}`},
		},
		{
			name: "UnassignAll", args: []string{"group", "unassign", "base", "--all-projects"},
			reply: `{"name":"base","projects":[],"count":0}`,
			want:  stubRequest{Method: "POST", Path: "/v1/groups/base/unassign", Body: `{"projects":[],"all_projects":true}`},
		},
		{
			name: "List", args: []string{"group", "list"},
			reply: `[{"name":"base","projects":["fraud","ml"],"count":2},{"name":"gpu","projects":[],"count":0}]`,
			want:  stubRequest{Method: "GET", Path: "/v1/groups"},
			out:   "NAME  PROJECTS  VARIABLES  CREATED\nbase  fraud,ml  2          -\ngpu   -         0          -\n",
		},
		{
			name: "Show", args: []string{"group", "show", "base"},
			reply: group1,
			want:  stubRequest{Method: "GET", Path: "/v1/groups/base"},
			out:   "name:      base\nprojects:  fraud\ncreated:   -\nupdated:   -\nA=1\nDB_PASSWORD=********\n",
		},
		{
			name: "ShowReveal", args: []string{"group", "show", "--reveal", "base"},
			reply: group1,
			want:  stubRequest{Method: "GET", Path: "/v1/groups/base", Query: "reveal=1"},
			out:   "name:      base\nprojects:  fraud\ncreated:   -\nupdated:   -\nA=1\nDB_PASSWORD=********\n",
		},
		{
			name: "Delete", args: []string{"group", "delete", "base"},
			status: 204,
			want:   stubRequest{Method: "DELETE", Path: "/v1/groups/base"},
		},
		{
			name: "Denied", args: []string{"group", "create", "base"},
			status: 403, reply: apiErr("PERMISSION_DENIED", "only admins create groups"),
			want:   stubRequest{Method: "POST", Path: "/v1/groups", Body: `{"name":"base"}`},
			errOut: "envlet: PERMISSION_DENIED: only admins create groups\n", code: 1,
		},
		{
			name: "ProjectSetFromSecret", args: []string{"project", "env", "set", "fraud", "DB", "--from-secret", "db_pass"},
			reply: varFoo,
			want:  stubRequest{Method: "PUT", Path: "/v1/projects/fraud/env/DB", Body: `{"from_secret":"db_pass"}`},
		},
		{
			name: "ProjectSetValueAndFromSecret", args: []string{"project", "env", "set", "fraud", "DB", "v", "--from-secret", "db_pass"},
			errOut: "envlet: USAGE: project env set: give one of VALUE, --value-stdin or --from-secret\n", code: 2,
		},
		{
			name: "EnvGetFromSecret", args: []string{"env", "get", "DB"},
			reply: `{"name":"DB","value":"********","secret":true,"masked":true,"from_secret":"db_pass"}`,
			want:  stubRequest{Method: "GET", Path: "/v1/users/me/env/DB"},
			out:   "********\n", errOut: "envlet: note: DB takes its value from secret db_pass when a workload starts\n",
		},
	})
}
