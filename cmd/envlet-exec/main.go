// Command envlet-exec is the envlet launcher: it asks the agent for this
// workload's environment and executes the program with it. See package
// launcher for everything it does; this file only hands over.
package main

import (
	"os"

	"github.com/envlet/envlet/launcher"
)

func main() { os.Exit(launcher.Main(os.Args[1:], os.Environ())) }
