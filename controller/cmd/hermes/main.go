// Command hermes is the Hermes command-line tool. Subcommands:
//
//	hermes build [flags] IMAGE   build a SOCI index for IMAGE into the cache registry
//
// main only wires: it parses settings, builds objects and runs them under a
// signal context; the behaviour lives in controller/build.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors in the command line (exit status 2).
var errUsage = errors.New("usage")

const usage = `usage: hermes <command> [flags]

commands:
  build    build a SOCI index for an image into the Hermes cache registry

Run "hermes <command> -h" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "build":
		err = runBuild(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "hermes: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "hermes %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "hermes %s: %v\n", args[0], err)
		return 1
	}
}
