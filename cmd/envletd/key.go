package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/envlet/envlet/agent"
	"github.com/envlet/envlet/fetch"
)

const keyUsage = `usage: envletd key COMMAND [ID] [-config FILE | -dev -dir DIR] [-key-file PATH] [-etcd URL,...] [-etcd-prefix P]

Key ring rotation. The key ring file is the agent's (key_file, or -key-file);
every agent of one etcd must hold the same keys.

  list              the key ids, the primary (which seals) first
  add [-primary]    add a fresh key: last (a secondary, which only opens),
                    or with -primary first; prints its id
  promote ID        make key ID the primary
  remove ID         delete key ID (not the primary; reencrypt first)
  reencrypt         re-seal every record of the store under the primary key,
                    while agents keep serving (etcd); the local store only
                    while its agent is stopped
  rotate            add -primary, then reencrypt: for one node, or a key ring
                    file that every agent reads

Without downtime on many nodes: add (a secondary), copy the file to every
node; promote it, copy again; then reencrypt from any one node. Agents reload
a changed key ring file within a second.
`

// runKey is `envletd key …`.
func runKey(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprint(stderr, keyUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, args := args[0], args[1:]
	id := ""
	needID := cmd == "promote" || cmd == "remove"
	if needID && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("envletd key "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keyUsage) }
	var (
		config     = fs.String("config", "", "config file")
		dev        = fs.Bool("dev", false, "the -dev layout under -dir")
		dir        = fs.String("dir", "", "with -dev: the agent's directory")
		keyFile    = fs.String("key-file", "", "key ring file")
		etcd       = fs.String("etcd", "", "etcd endpoints")
		etcdPrefix = fs.String("etcd-prefix", "", "key prefix in etcd")
		primary    = fs.Bool("primary", false, "with add: the new key becomes the primary")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if needID && id == "" && fs.NArg() > 0 {
		// The ID came after some flags: parse the flags after it too.
		id = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return 2
		}
	}
	if fs.NArg() > 0 || (needID && id == "") {
		fmt.Fprint(stderr, keyUsage)
		return 2
	}
	var cargs []string
	for _, f := range []struct {
		name, v string
	}{{"config", *config}, {"dir", *dir}, {"key-file", *keyFile}, {"etcd", *etcd}, {"etcd-prefix", *etcdPrefix}} {
		if f.v != "" {
			cargs = append(cargs, "-"+f.name, f.v)
		}
	}
	if *dev {
		cargs = append(cargs, "-dev")
	}
	var cfg agent.Config
	var err error
	if _, serr := os.Stat(agent.DefaultConfigPath); *config != "" || *dev || serr == nil {
		cfg, err = agent.LoadConfig(cargs, stderr)
	} else {
		// No config file: the defaults and the flags (-key-file, -etcd).
		cfg, err = agent.ParseConfig(nil)
		if *keyFile != "" {
			cfg.KeyFile = *keyFile
		}
		if *etcd != "" {
			cfg.EtcdEndpoints = strings.Split(*etcd, ",")
		}
		if *etcdPrefix != "" {
			cfg.EtcdPrefix = *etcdPrefix
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "envletd key:", err)
		return 2
	}
	if err := keyCommand(ctx, cmd, id, *primary, cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "envletd key %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func keyCommand(ctx context.Context, cmd, id string, primary bool, cfg agent.Config, stdout io.Writer) error {
	path := cfg.KeyFile
	switch cmd {
	case "list":
		k, err := fetch.LoadKeyring(path, false)
		if err != nil {
			return err
		}
		for i, id := range k.IDs() {
			role := "secondary"
			if i == 0 {
				role = "primary"
			}
			fmt.Fprintf(stdout, "%s\t%s\n", id, role)
		}
		return nil
	case "add":
		id, err := fetch.AddKey(path, primary)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id)
		return nil
	case "promote":
		return fetch.PromoteKey(path, id)
	case "remove":
		return fetch.RemoveKey(path, id)
	case "reencrypt":
		return reencrypt(ctx, cfg, stdout)
	case "rotate":
		id, err := fetch.AddKey(path, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "new primary key %s\n", id)
		return reencrypt(ctx, cfg, stdout)
	default:
		return fmt.Errorf("unknown command (want list, add, promote, remove, reencrypt or rotate)")
	}
}

func reencrypt(ctx context.Context, cfg agent.Config, stdout io.Writer) error {
	keys, err := fetch.LoadKeyring(cfg.KeyFile, false)
	if err != nil {
		return err
	}
	b, err := agent.OpenStore(cfg, keys)
	if err != nil {
		if len(cfg.EtcdEndpoints) == 0 {
			return fmt.Errorf("%w (the local store is re-encrypted while its agent is stopped)", err)
		}
		return err
	}
	defer b.Close()
	res, err := fetch.Reseal(ctx, b, keys)
	fmt.Fprintf(stdout, "re-encrypted %d of %d records under key %s\n", res.Resealed, res.Records, keys.PrimaryID())
	return err
}
