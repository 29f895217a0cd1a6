package console

import (
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/envlet/envlet/agent/api"
)

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string // which tab is current
	Who     *api.Whoami
	CSRF    string
	Flash   *flash
	Error   string // the page could not be built whole
	Message string // the refusal page's text
	Data    any
}

// pageNames are the templates in web/, each rendered inside layout.html.
var pageNames = []string{"refused", "env", "secrets", "projects", "project", "org", "workloads", "audit"}

var funcs = template.FuncMap{
	"join":   strings.Join,
	"add":    func(a, b int) int { return a + b },
	"masked": func(s string) bool { return s == api.MaskText },
	"rowErr": func(f *flash, row string) string {
		if f != nil && f.Error && f.Row == row {
			return f.Text
		}
		return ""
	},
	"vars":   newVarTable,
	"addRow": func() string { return addRow },
	"unassigned": func(all []api.Project, assigned []string) []string {
		var out []string
		for _, p := range all {
			if !slices.Contains(assigned, p.Name) {
				out = append(out, p.Name)
			}
		}
		return out
	},
	"kv":        func(k, v string) map[string]string { return map[string]string{k: v} },
	"has":       func(list []string, s string) bool { return slices.Contains(list, s) },
	"shortTime": shortTime,
	"changed":   changedTitle,
}

// shortTime is a record's time in UTC to the second, for reading; the page
// keeps the exact one in a datetime or title attribute.
func shortTime(ts string) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func shortUTC(ts string) string { return shortTime(ts) + " UTC" }

// changedTitle says when a record was created and last changed, and by
// whom, for a title attribute; "" for a record older than envlet's dates.
func changedTitle(d api.Dated) string {
	var parts []string
	if d.CreatedAt != "" {
		parts = append(parts, "created "+shortUTC(d.CreatedAt))
	}
	if d.UpdatedAt != "" {
		s := "changed " + shortUTC(d.UpdatedAt)
		if d.UpdatedBy != "" {
			s += " by " + d.UpdatedBy
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(webFS, "web/layout.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(webFS, "web/"+n+".html")
		if err != nil {
			return nil, err
		}
		out[n] = t
	}
	return out, nil
}

// render shows a page: the session's flash (once), who is signed in, and
// the page's data.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, v *view) {
	sess := sessionOf(r)
	s.mu.Lock()
	v.CSRF, v.Flash, sess.flash = sess.csrf, sess.flash, nil
	s.mu.Unlock()
	if v.Who == nil {
		v.Who = &api.Whoami{}
	}
	if v.Nav == "" {
		v.Nav = name
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.pages[name].ExecuteTemplate(w, "layout", v); err != nil {
		// Headers are gone; the log is the only place left, and it
		// never gets a value: template errors name the template only.
		http.Error(w, "template error", http.StatusInternalServerError)
	}
}

// done records a write's outcome for the next page and sends the browser
// there (post/redirect/get: a reload never repeats a write).
func (s *Server) done(w http.ResponseWriter, r *http.Request, to, row string, err error, okText string) {
	f := &flash{Text: okText}
	if err != nil {
		f = &flash{Error: true, Text: errText(err), Row: row}
	}
	sess := sessionOf(r)
	s.mu.Lock()
	sess.flash = f
	s.mu.Unlock()
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// errText is an error as a page shows it: the agent's code and message
// (which never hold a value), or the console's own.
func errText(err error) string {
	return err.Error()
}

// varTable is the data of the "varrows" template: one variable table.
type varTable struct {
	Vars       []api.Variable
	Revealed   map[string]string
	Flash      *flash
	CSRF       string
	ID         string            // prefix of the rows' form ids
	Action     string            // the forms post to Action/save, /reveal, /DeleteVerb
	RowPrefix  string            // a flash row for this table is RowPrefix+name
	Edit       bool              // rows are editable
	CanReveal  bool              // a masked row has a reveal button
	DeleteVerb string            // "delete" or "unset"
	Extra      map[string]string // hidden fields every form carries
	Caption    string
}

func newVarTable(vars []api.Variable, revealed map[string]string, f *flash, csrf, id, action, rowPrefix string,
	edit, canReveal bool, deleteVerb string, extra map[string]string, caption string) *varTable {
	return &varTable{vars, revealed, f, csrf, id, action, rowPrefix, edit, canReveal, deleteVerb, extra, caption}
}
