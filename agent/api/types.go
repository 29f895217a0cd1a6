package api

// MaxBody is the agent's limit on a request body: a larger one is refused
// with CodeInvalidRequest before it is read whole.
const MaxBody = 1 << 20

// MaskText stands in for a value that is masked in a reply.
const MaskText = "********"

// Dated says when a stored thing (variable, secret, group, project, API
// registration) was created and last changed, and by whom: RFC 3339 in
// UTC, and the user name of the caller who made the change. A record
// written before envlet kept dates has none (the fields are left out): its
// next write sets UpdatedAt and UpdatedBy, and CreatedAt stays unknown.
type Dated struct {
	CreatedAt string `json:"created_at,omitempty"`
	UpdatedAt string `json:"updated_at,omitempty"`
	UpdatedBy string `json:"updated_by,omitempty"`
}

// Whoami is the reply of GET /v1/whoami: who the agent takes the caller for.
type Whoami struct {
	User  string `json:"user"`
	UID   uint32 `json:"uid"`
	Admin bool   `json:"admin"`
}

// Status is the reply of GET /v1/status. Fields a backend does not have are
// left out; StaleSeconds is 0 while connected and -1 when the data was never
// known current.
type Status struct {
	Backend         string `json:"backend"`
	Revision        int64  `json:"revision"`
	Connected       bool   `json:"connected"`
	StaleSeconds    int64  `json:"stale_seconds"`
	Users           int    `json:"users"`
	Projects        int    `json:"projects"`
	Variables       int    `json:"variables"`
	Groups          int    `json:"groups"`
	Secrets         int    `json:"secrets"`
	Workloads       int    `json:"workloads"`
	UptimeSeconds   int64  `json:"uptime_seconds"`
	MemoryLocked    bool   `json:"memory_locked"`
	LockedBytes     int64  `json:"locked_bytes"`      // the values' locked memory
	BodyLockedBytes int64  `json:"body_locked_bytes"` // admin request bodies and replies
	// etcd only.
	ServingSnapshot bool   `json:"serving_snapshot,omitempty"`
	MissingKeys     string `json:"missing_keys,omitempty"`   // comma-separated key ids the key ring lacks
	SnapshotError   string `json:"snapshot_error,omitempty"` // why the snapshot file cannot be written
	// Audit records that could not be written (serves go on when the audit
	// log fails; admin changes do not), and the last write error, if any.
	AuditLostRecords int64  `json:"audit_lost_records"`
	AuditError       string `json:"audit_error,omitempty"`
}

// Variable is a variable in a reply. Value is MaskText and Masked true when
// the value is masked (the secret flag, or a name containing key, token,
// secret or password) and reveal was not asked for or not allowed. A
// variable that takes its value from a secret names it in FromSecret and is
// always masked: its value depends on the workload.
type Variable struct {
	Name       string `json:"name"`
	Value      string `json:"value"`
	Secret     bool   `json:"secret"`
	Masked     bool   `json:"masked"`
	FromSecret string `json:"from_secret,omitempty"`
	Dated
	// Source is set in GET /v1/projects/{p}/env?groups=1: "project" for
	// the project's own variables, "group:NAME" for those a group gives.
	Source string `json:"source,omitempty"`
}

// VariableWrite is the body of a variable write (POST create, PUT set,
// PATCH update): Value or FromSecret. Value is a pointer because "" is a
// value (it clears the name for the workload); Secret nil keeps the flag a
// stored variable has.
type VariableWrite struct {
	Value      *string `json:"value,omitempty"`
	FromSecret string  `json:"from_secret,omitempty"`
	Secret     *bool   `json:"secret,omitempty"`
}

// DeleteAllReply is the reply of DELETE /v1/users/{user}/env.
type DeleteAllReply struct {
	Deleted int64 `json:"deleted"`
}

// Project is a project in a reply.
type Project struct {
	Name    string   `json:"name"`
	Owners  []string `json:"owners"`
	Members []string `json:"members"`
	Groups  []string `json:"groups"` // in order, later wins
	Dated
}

// ProjectCreate is the body of POST /v1/projects.
type ProjectCreate struct {
	Name string `json:"name"`
}

// MemberAdd is the body of POST /v1/projects/{p}/members.
type MemberAdd struct {
	User  string `json:"user"`
	Owner bool   `json:"owner,omitempty"`
}

// ProjectGroups is the body of PUT /v1/projects/{p}/groups: the whole
// order of the project's groups, later wins.
type ProjectGroups struct {
	Groups []string `json:"groups"`
}

// Group is a group in a reply; lists leave Variables out.
type Group struct {
	Name string `json:"name"`
	// AllProjects: the group is in every project's order, present and
	// future, below the project's own groups; Projects lists those it is
	// assigned to by name (a non-admin: only their own).
	AllProjects bool       `json:"all_projects,omitempty"`
	Projects    []string   `json:"projects"`
	Count       int        `json:"count"`
	Variables   []Variable `json:"variables,omitempty"`
	Dated
}

// GroupCreate is the body of POST /v1/groups.
type GroupCreate struct {
	Name string `json:"name"`
}

// GroupProjects is the body of POST /v1/groups/{g}/assign and /unassign.
type GroupProjects struct {
	Projects []string `json:"projects"`
	// AllProjects (instead of Projects) assigns the group to every
	// project, present and future, or unassigns it from all of them.
	AllProjects bool `json:"all_projects,omitempty"`
}

// Secret kinds.
const (
	SecretText = "text"
	SecretFile = "file"
)

// Secret is a secret in a reply. Lists leave Value out; GET gives MaskText
// and Masked unless reveal was asked for. Size counts the characters stored
// (a file secret's: its base64).
type Secret struct {
	Name   string  `json:"name"`
	Kind   string  `json:"kind"` // SecretText or SecretFile
	Size   int     `json:"size"`
	Value  *string `json:"value,omitempty"`
	Masked bool    `json:"masked,omitempty"`
	Dated
}

// SecretWrite is the body of a secret write. With File, Value is the
// standard padded base64 (no line breaks) of the file's bytes.
type SecretWrite struct {
	Value string `json:"value"`
	File  bool   `json:"file,omitempty"`
}

// HMACRequest is the body of POST /v1/audit/hmac.
type HMACRequest struct {
	Value string `json:"value"`
}

// HMACReply is its reply: the hex HMAC-SHA256 of the value under the audit
// key, as the audit log records it.
type HMACReply struct {
	HMAC string `json:"hmac"`
}

// Match says which callers a registration matches (docs/design.md §4).
type Match struct {
	UID         *uint32 `json:"uid,omitempty"`
	GID         *uint32 `json:"gid,omitempty"`
	SystemdUnit string  `json:"systemd_unit,omitempty"`
	Cgroup      string  `json:"cgroup,omitempty"`
	ContainerID string  `json:"container_id,omitempty"`
	Token       bool    `json:"token,omitempty"` // the agent issues a token file
}

// Registration is the body of POST /v1/workloads, the same document as a
// workloads.d/*.json file.
type Registration struct {
	ID        string            `json:"id"`
	User      string            `json:"user"`
	Project   string            `json:"project"`
	Match     Match             `json:"match"`
	Runtime   map[string]string `json:"runtime,omitempty"`
	Execution map[string]string `json:"execution,omitempty"`
	Mount     bool              `json:"mount,omitempty"`
}

// Registered is the reply of POST /v1/workloads; TokenFile is set when the
// agent issued a token.
type Registered struct {
	ID        string `json:"id"`
	TokenFile string `json:"token_file,omitempty"`
}

// Workload is a registration as GET /v1/workloads lists it: no values, the
// names of its runtime and execution variables only.
type Workload struct {
	ID          string   `json:"id"`
	User        string   `json:"user"`
	Project     string   `json:"project"`
	Match       Match    `json:"match"`
	Mount       bool     `json:"mount"`
	Source      string   `json:"source"` // api, or the workloads.d file it came from
	Path        string   `json:"path,omitempty"`
	TokenFile   string   `json:"token_file,omitempty"`
	Runtime     []string `json:"runtime"`
	Execution   []string `json:"execution"`
	Revision    int64    `json:"revision"`
	EnvRevision int64    `json:"env_revision"`
	Stale       bool     `json:"stale"`
	Dated
}

// Explained is one name of GET /v1/explain's reply: where its value comes
// from and which layers it overrides.
type Explained struct {
	Name      string   `json:"name"`
	Value     string   `json:"value"`
	Masked    bool     `json:"masked"`
	Secret    bool     `json:"secret"`
	Cleared   bool     `json:"cleared"` // an empty value clears the name
	Layer     string   `json:"layer"`
	Overrides []string `json:"overrides"`
	// SecretScope is, for a variable set --from-secret, whose secret it
	// took ("secret:user:alice", "secret:project:p").
	SecretScope string `json:"secret_scope,omitempty"`
	// LeftOut says why this layer's variable of that name is not served
	// (its secret is not one the layer reaches; a protected name). Such
	// an entry has no value and comes before the name's winner, if any.
	LeftOut string `json:"left_out,omitempty"`
}

// ExplainPreview is the body of POST /v1/explain: what a new workload of
// User (empty: the caller) in Project would start with, Execution taken as
// its execution layer (an empty value clears the name), before anything is
// registered. The reply is GET /v1/explain's.
type ExplainPreview struct {
	User      string            `json:"user,omitempty"`
	Project   string            `json:"project"`
	Execution map[string]string `json:"execution,omitempty"`
}

// RunRequest is the body of POST /v1/runs (envlet run): a short-lived
// registration for the caller's own uid, user and a project they are a
// member of. Execution is the execution layer (an empty value clears the
// name). The registration lasts as long as the connection that asked for it.
type RunRequest struct {
	Project   string            `json:"project"`
	Execution map[string]string `json:"execution,omitempty"`
}

// RunStarted is the first line of POST /v1/runs's reply (a stream of JSON
// lines): the registration the agent made for the run. The program is
// launched with TokenFile on the workload socket Socket.
type RunStarted struct {
	ID        string `json:"id"`
	User      string `json:"user"`
	Project   string `json:"project"`
	UID       uint32 `json:"uid"`
	TokenFile string `json:"token_file"`
	Socket    string `json:"socket"`
}

// RunEnded is the last line of POST /v1/runs's reply, written once the
// registration is gone: after the client closed its side of the
// connection, or when the agent stops.
type RunEnded struct {
	ID    string `json:"id"`
	Ended bool   `json:"ended"`
}

// AuditRecord is one line of the audit log as GET /v1/audit returns it.
// Only the fields a record has are set. Readers that are not admins get
// records without HMAC and HMACs: two equal HMACs say two values are
// equal, which a project owner must not learn of a member's own values.
type AuditRecord struct {
	Time         string            `json:"time"`
	Action       string            `json:"action"`
	UID          *int64            `json:"uid,omitempty"`
	User         string            `json:"user,omitempty"`
	PID          int32             `json:"pid,omitempty"`
	Scope        string            `json:"scope,omitempty"`
	Name         string            `json:"name,omitempty"`
	Workload     string            `json:"workload,omitempty"`
	WorkloadUser string            `json:"workload_user,omitempty"`
	Project      string            `json:"project,omitempty"`
	Groups       []string          `json:"groups,omitempty"`
	Revision     int64             `json:"revision,omitempty"`
	FromSecret   string            `json:"from_secret,omitempty"`
	HMAC         string            `json:"hmac,omitempty"`
	HMACs        map[string]string `json:"hmacs,omitempty"`
	Code         string            `json:"code,omitempty"`
	Reason       string            `json:"reason,omitempty"`
	Request      string            `json:"request,omitempty"`
	Socket       string            `json:"socket,omitempty"`
}

// AuditList is the reply of GET /v1/audit: the matching records, oldest
// first, at most the limit asked for (the newest ones when more match;
// Truncated says so), and the files read, oldest first.
type AuditList struct {
	Records   []AuditRecord `json:"records"`
	Truncated bool          `json:"truncated"`
	Files     []string      `json:"files"`
}

// Secret visibilities in a SecretListed.
const (
	VisibilityPrivate = "private" // the caller's own private secret
	VisibilityProject = "project" // a secret of Project, shared with its members
)

// SecretListed is one secret of GET /v1/secrets: every secret the caller
// can read as a user (their private ones, then those of each project they
// are a member or owner of), never a value.
type SecretListed struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // SecretText or SecretFile
	Size       int    `json:"size"`
	Visibility string `json:"visibility"`        // VisibilityPrivate or VisibilityProject
	Project    string `json:"project,omitempty"` // with VisibilityProject
	Dated
}
