package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/envlet/envlet/agent/api"
)

//go:embed web
var webFS embed.FS

// Agent is the admin API as the console uses it: *client.Client.
type Agent interface {
	Call(ctx context.Context, method, path string, query url.Values, in, out any) ([]byte, error)
}

// maxForm bounds a form, an uploaded file included. The agent refuses a
// body over api.MaxBody, and a file travels as base64 (4/3 larger).
const maxForm = 2 * api.MaxBody

// csp allows the console's own assets only: no inline script, no other
// origin, no framing, forms posting only back to the console.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Server serves the console to the one browser that signs in with its token.
type Server struct {
	agent  Agent
	host   string // the listener's host:port, the only Host accepted
	cookie string // the session cookie's name, per port: two consoles never share one
	pages  map[string]*template.Template
	static http.Handler
	mux    *http.ServeMux
	csrf   *http.CrossOriginProtection

	mu       sync.Mutex
	token    string // the sign-in token; "" once spent
	sessions map[string]*session
}

// session is one signed-in browser.
type session struct {
	csrf  string // the token every form carries
	flash *flash // what the last write did, shown once
}

// addRow names the row (or form) that adds something new, for a flash.
const addRow = "+"

// flash is the outcome of a write, shown on the next page; Row names the
// table row an error belongs to.
type flash struct {
	Error bool
	Text  string
	Row   string
}

// Listen listens on addr, which must be a loopback address: the console
// is for the browser of the machine it runs on.
func Listen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %v", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--listen %q: not a loopback IP address (127.0.0.1 or [::1])", addr)
	}
	return net.Listen("tcp", addr)
}

// New returns a console for a listener at addr (host:port as the browser
// will send it in Host), with a fresh sign-in token.
func New(agent Agent, addr string) (*Server, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	static, _ := fs.Sub(webFS, "web/static")
	s := &Server{
		agent:    agent,
		host:     addr,
		cookie:   "envlet_console_" + port,
		pages:    pages,
		static:   http.StripPrefix("/static/", http.FileServerFS(static)),
		csrf:     http.NewCrossOriginProtection(),
		token:    randomToken(),
		sessions: map[string]*session{},
	}
	s.mux = s.routes()
	return s, nil
}

// LoginURL is the URL to print: it holds the one-time sign-in token.
func (s *Server) LoginURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.host + "/login?token=" + s.token
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ServeHTTP refuses what must be refused before any page is considered:
// another Host (DNS rebinding), no session, a cross-site write or one
// without the session's CSRF token.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// The sign-in URL holds the token: never send it on as a Referer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")

	if r.Host != s.host {
		s.refuse(w, http.StatusMisdirectedRequest, "This console answers at http://"+s.host+"/ only.")
		return
	}
	if strings.HasPrefix(r.URL.Path, "/static/") && r.Method == http.MethodGet {
		s.static.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == "/login" {
		s.login(w, r)
		return
	}
	sess := s.session(r)
	if sess == nil {
		s.refuse(w, http.StatusUnauthorized, "Not signed in. Open the URL that `envlet ui` printed; it works once. To sign in again, restart `envlet ui`.")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := s.csrf.Check(r); err != nil {
			s.refuse(w, http.StatusForbidden, "Refused a cross-site request.")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseMultipartForm(maxForm); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			s.refuse(w, http.StatusRequestEntityTooLarge, "The form is too large or malformed.")
			return
		}
		if got := r.PostFormValue("csrf"); subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
			s.refuse(w, http.StatusForbidden, "Refused a form without this session's token (a cross-site request, or a page from before a restart).")
			return
		}
	}
	s.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
}

type sessionKey struct{}

func sessionOf(r *http.Request) *session { return r.Context().Value(sessionKey{}).(*session) }

func (s *Server) session(r *http.Request) *session {
	c, err := r.Cookie(s.cookie)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[c.Value]
}

// login exchanges the one-time token for a session cookie. The token is
// spent by the first correct use, so a URL found later in a shell history
// or a screenshot signs nobody in.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	got := r.URL.Query().Get("token")
	s.mu.Lock()
	ok := s.token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
	var id string
	if ok {
		s.token = ""
		id = randomToken()
		s.sessions[id] = &session{csrf: randomToken()}
	}
	s.mu.Unlock()
	if !ok {
		s.refuse(w, http.StatusUnauthorized, "This sign-in link is not valid, or was used already. Restart `envlet ui` for a new one.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookie, Value: id, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/env", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(s.cookie); err == nil {
		s.mu.Lock()
		delete(s.sessions, c.Value)
		s.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.refuse(w, http.StatusOK, "Signed out. Restart `envlet ui` to sign in again.")
}

// refuse answers with a small page that needs no session.
func (s *Server) refuse(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	s.pages["refused"].ExecuteTemplate(w, "layout", &view{Title: http.StatusText(status), Who: &api.Whoami{}, Message: text})
}

// Serve serves the console on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		return nil
	}
}
