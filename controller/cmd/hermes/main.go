// Command hermes is the Hermes command-line tool. Subcommands:
//
//	hermes build [flags] IMAGE   build a SOCI index for IMAGE into the cache registry
//
// main only wires: each subcommand is a cli.Command whose settings are
// declared once (flag, environment, default, help); the behaviour lives in
// controller/builder.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/hermes-oci/hermes/registry/cli"
)

const usage = `usage: hermes <command> [flags]

commands:
  build    build a SOCI index for an image into the Hermes cache registry

Run "hermes <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.ExitUsage
	}
	switch args[0] {
	case "build":
		return cli.Run(ctx, buildCommand(stdout, stderr), args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return cli.ExitOK
	default:
		fmt.Fprintf(stderr, "hermes: unknown command %q\n%s", args[0], usage)
		return cli.ExitUsage
	}
}
