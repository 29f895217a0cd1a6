// Package console is the web console of `envlet ui`: server-rendered pages
// (html/template, embedded assets, a little optional JavaScript) over the
// agent's admin API, served on a loopback address to one browser.
//
// It owns the console's HTTP surface only: the one-time sign-in token and
// the session it is exchanged for, the refusals a local web server must make
// (no session, a Host that is not the listener, cross-site writes, framing),
// and turning forms into admin API calls. It talks to the agent through the
// admin socket as the user who ran it, so every permission is the agent's.
//
// It must not decide who may do what (the agent does), keep any value
// beyond one request, show a masked value unless the user asked to reveal
// it (the agent audits reveals), or load anything from another origin. It
// is, with the agent's admin handler, the only package that serves
// net/http.
package console
