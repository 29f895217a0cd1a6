package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Shell completion. `envlet completion bash|zsh|fish` (cobra's generator)
// prints a script that calls the hidden `envlet __complete ARGS…` on Tab.
// Commands and flags come from the command tree; the names of variables,
// projects, groups, secrets and workloads come from the agent, asked as the
// caller, so a user is offered only what the agent shows them. Only names
// are printed: a reply's values (masked or not) are dropped unread.

// nameKind is what a positional argument or flag names.
type nameKind int

const (
	accountVars nameKind = iota // the account variables of --user (default me)
	projects                    // projects the caller sees
	projectVars                 // the variables of the project in args[0]
	groups                      // groups the caller sees
	groupVars                   // the variables of the group in args[0]
	secrets                     // the secrets of --project P, else of --user
	ownSecrets                  // the caller's private secrets (--from-secret)
	workloads                   // registered workload ids
)

// argNames says what each positional argument of a command names, by its
// path below the root; variadic repeats the last kind for later arguments.
// A command not listed, or an argument past the list, completes nothing
// (not file names) unless it is in fileArgs.
var argNames = map[string]struct {
	kinds    []nameKind
	variadic bool
}{
	"env get":               {kinds: []nameKind{accountVars}},
	"env set":               {kinds: []nameKind{accountVars}},
	"env update":            {kinds: []nameKind{accountVars}},
	"env delete":            {kinds: []nameKind{accountVars}},
	"project show":          {kinds: []nameKind{projects}},
	"project delete":        {kinds: []nameKind{projects}},
	"project add-member":    {kinds: []nameKind{projects}},
	"project remove-member": {kinds: []nameKind{projects}},
	"project groups":        {kinds: []nameKind{projects, groups}, variadic: true},
	"project env set":       {kinds: []nameKind{projects, projectVars}},
	"project env list":      {kinds: []nameKind{projects}},
	"project env delete":    {kinds: []nameKind{projects, projectVars}},
	"group set":             {kinds: []nameKind{groups, groupVars}},
	"group unset":           {kinds: []nameKind{groups, groupVars}},
	"group assign":          {kinds: []nameKind{groups, projects}, variadic: true},
	"group unassign":        {kinds: []nameKind{groups, projects}, variadic: true},
	"group show":            {kinds: []nameKind{groups}},
	"group delete":          {kinds: []nameKind{groups}},
	"secret get":            {kinds: []nameKind{secrets}},
	"secret set":            {kinds: []nameKind{secrets}},
	"secret delete":         {kinds: []nameKind{secrets}},
	"workload delete":       {kinds: []nameKind{workloads}},
}

// fileArgs are the commands whose arguments are local files.
var fileArgs = map[string]bool{"workload register": true}

// flagNames says what a flag's value names; flags in fileFlags complete
// file names, every other flag that takes a value completes nothing.
var flagNames = map[string]nameKind{"project": projects, "workload": workloads, "from-secret": ownSecrets}

var fileFlags = map[string]bool{"socket": true, "file": true}

// completionTimeout bounds the agent's answer: a Tab must not hang.
const completionTimeout = 3 * time.Second

// hiddenCommands are added by files built with a tag (man.go: `-tags mangen`).
var hiddenCommands []func(*app) *cobra.Command

// addCompletion turns on `envlet completion` and wires the completions of
// argNames and flagNames into every command of root's tree.
func (a *app) addCompletion(root *cobra.Command) {
	root.CompletionOptions.DisableDefaultCmd = false
	root.CompletionOptions.HiddenDefaultCmd = false
	// Made now rather than by Execute, so that `envlet completion` without
	// a shell, or with one cobra does not know, is a USAGE error as every
	// other group is (cobra's own prints help and exits 0).
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		g := group(c.Use, c.Short)
		c.Args, c.RunE, c.SuggestionsMinimumDistance = g.Args, g.RunE, g.SuggestionsMinimumDistance
	}
	for _, h := range hiddenCommands {
		root.AddCommand(h(a))
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimSpace(strings.TrimPrefix(c.CommandPath(), root.Name()))
		if c.ValidArgsFunction == nil && !fileArgs[path] && c.Runnable() {
			spec := argNames[path]
			c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				i := len(args)
				if i >= len(spec.kinds) && spec.variadic {
					i = len(spec.kinds) - 1
				}
				if i >= len(spec.kinds) {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return a.completeNames(cmd, spec.kinds[i], args, toComplete)
			}
		}
		for _, f := range ownValueFlags(c) {
			kind, named := flagNames[f]
			if fileFlags[f] {
				continue
			}
			_ = c.RegisterFlagCompletionFunc(f, func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if !named {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return a.completeNames(cmd, kind, args, toComplete)
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// ownValueFlags are the names of the flags c defines itself (an inherited
// flag is wired where it is defined) that take a value.
func ownValueFlags(c *cobra.Command) []string {
	var names []string
	add := func(f *pflag.Flag) {
		if f.Value.Type() != "bool" && f.Name != "help" {
			names = append(names, f.Name)
		}
	}
	c.LocalNonPersistentFlags().VisitAll(add)
	c.PersistentFlags().VisitAll(add)
	return names
}

// completeNames asks the agent for the names of kind that start with
// toComplete. A failure (no agent, no permission) completes nothing: a Tab
// has no place to report it.
func (a *app) completeNames(cmd *cobra.Command, kind nameKind, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	names, err := a.listNames(ctx, cmd, kind, args)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []string
	for _, n := range names {
		// A name with a tab or a line break would break the completion
		// protocol (one candidate a line, a tab before its description).
		if strings.HasPrefix(n, toComplete) && !strings.ContainsAny(n, "\t\r\n") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), cobra.ShellCompDirectiveNoFileComp
}

// listNames fetches the names of kind; args are the command's positional
// arguments so far (projectVars and groupVars read args[0]).
func (a *app) listNames(ctx context.Context, cmd *cobra.Command, kind nameKind, args []string) ([]string, error) {
	// named is every list reply's shape as far as completion reads it:
	// names and ids; values are never decoded.
	type named struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	}
	get := func(path string, err error) ([]string, error) {
		if err != nil {
			return nil, err
		}
		var items []named
		if _, err := a.client().call(ctx, http.MethodGet, path, nil, nil, &items); err != nil {
			return nil, err
		}
		names := make([]string, 0, len(items))
		for _, it := range items {
			names = append(names, it.Name+it.ID) // one of them is set
		}
		return names, nil
	}
	flag := func(name, def string) string {
		if f := cmd.Flags().Lookup(name); f != nil && f.Value.String() != "" {
			return f.Value.String()
		}
		return def
	}
	switch kind {
	case accountVars:
		return get(apiPath("/v1/users/%s/env", "--user", flag("user", "me")))
	case projects:
		return get("/v1/projects", nil)
	case projectVars:
		return get(apiPath("/v1/projects/%s/env", "project", firstArg(args)))
	case groups:
		return get("/v1/groups", nil)
	case groupVars:
		p, err := apiPath("/v1/groups/%s", "group", firstArg(args))
		if err != nil {
			return nil, err
		}
		var g struct {
			Variables []named `json:"variables"`
		}
		if _, err := a.client().call(ctx, http.MethodGet, p, nil, nil, &g); err != nil {
			return nil, err
		}
		var names []string
		for _, v := range g.Variables {
			names = append(names, v.Name)
		}
		return names, nil
	case secrets:
		if p := flag("project", ""); p != "" {
			return get(apiPath("/v1/projects/%s/secrets", "--project", p))
		}
		return get(apiPath("/v1/users/%s/secrets", "--user", flag("user", "me")))
	case ownSecrets:
		return get("/v1/users/me/secrets", nil)
	case workloads:
		return get("/v1/workloads", nil)
	}
	return nil, nil
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}
