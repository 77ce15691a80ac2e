// Command realimages builds the cluster benchmark's real images (see package
// realimages) into $HERMES_CACHE/realimages and optionally pushes them:
//
//	realimages build node|ml            build (or find in the cache)
//	realimages push node|ml REF         build if needed, then push to REF
//	realimages trace node|ml            run the workload warm, list the files it opens
//
// It needs root (debootstrap, overlayfs, chroot).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/hermes-oci/hermes/tools/imagegen"
	"github.com/hermes-oci/hermes/tools/realimages"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "realimages:", err)
		os.Exit(1)
	}
}

func run() error {
	args := os.Args[1:]
	if len(args) < 2 || (args[0] == "push" && len(args) != 3) || (args[0] != "build" && args[0] != "push" && args[0] != "trace") {
		return fmt.Errorf("usage: realimages build NAME | realimages push NAME REF | realimages trace NAME (names: %v)", realimages.Names())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	r, err := realimages.Lookup(args[1])
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	img, err := realimages.Build(ctx, r, log)
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if args[0] == "trace" {
		files, took, err := realimages.Trace(ctx, r, realimages.Port)
		if err != nil {
			return err
		}
		for _, f := range files {
			fmt.Println(f)
		}
		fmt.Fprintf(os.Stderr, "%d files opened, HTTP 200 after %s\n", len(files), took)
		return nil
	}
	if args[0] == "push" {
		if _, err := imagegen.Push(ctx, args[2], img); err != nil {
			return err
		}
		fmt.Printf("%s@%s\n", args[2], d)
		return nil
	}
	fmt.Println(d)
	return nil
}
