package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alexflint/go-arg"
	"github.com/go-logr/logr"
)

// Exit codes of Run.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// ErrUsage marks an error in how the command was called; Run exits with
// ExitUsage and prints the usage. Commands wrap it for arguments they check
// themselves.
var ErrUsage = errors.New("usage")

// Command is one binary: its name, what --help says about it, the prefix of
// its environment variables, and what it does once its settings are parsed.
// S is the settings struct (go-arg tags); embed Logging in it to get
// --log-level and --log-format.
type Command[S any] struct {
	// Name is the program name in help and errors.
	Name string
	// Description is printed at the top of --help.
	Description string
	// EnvPrefix is put before every env tag's name ("HERMES_REGISTRY_").
	EnvPrefix string
	// New, if set, returns the settings before parsing, with defaults that
	// come from code (a library's DefaultSettings) rather than from
	// default tags; --help shows them. nil means new(S).
	New func() *S
	// Run does the work. ctx is cancelled by SIGINT and SIGTERM and carries
	// the logger.
	Run func(ctx context.Context, s *S) error
}

// Main runs c with the process's arguments and exits.
func Main[S any](c Command[S]) {
	os.Exit(Run(context.Background(), c, os.Args[1:], os.Stdout, os.Stderr))
}

// Run parses args into a new S, sets up logging to stderr when S embeds
// Logging, runs c.Run and returns the exit code. It is Main without the
// process: tests call it.
func Run[S any](ctx context.Context, c Command[S], args []string, stdout, stderr io.Writer) int {
	s := new(S)
	if c.New != nil {
		s = c.New()
	}
	p, err := newParser(c, s, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return ExitError
	}
	switch err := p.Parse(args); {
	case errors.Is(err, arg.ErrHelp):
		_ = p.WriteHelpForSubcommand(stdout, p.SubcommandNames()...)
		return ExitOK
	case err != nil:
		_ = p.WriteUsageForSubcommand(stderr, p.SubcommandNames()...)
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return ExitUsage
	}
	if l, ok := any(s).(interface{ logging() *Logging }); ok {
		logger, err := l.logging().NewLogger(stderr)
		if err != nil {
			_ = p.WriteUsageForSubcommand(stderr, p.SubcommandNames()...)
			fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
			return ExitUsage
		}
		RouteLibraryLogs(logger.Handler())
		ctx = logr.NewContext(ctx, logr.FromSlogHandler(logger.Handler()))
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = c.Run(ctx, s)
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrUsage):
		_ = p.WriteUsageForSubcommand(stderr, p.SubcommandNames()...)
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return ExitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return ExitError
	}
}

// Parse fills s from args and the environment as Run would, without running
// anything; for tests of a binary's settings.
func Parse[S any](c Command[S], s *S, args []string) error {
	p, err := newParser(c, s, io.Discard)
	if err != nil {
		return err
	}
	return p.Parse(args)
}

// described gives go-arg the Command's description; it has no settings.
type described struct{ text string }

func (d *described) Description() string { return d.text }

func newParser[S any](c Command[S], s *S, out io.Writer) (*arg.Parser, error) {
	cfg := arg.Config{Program: c.Name, EnvPrefix: c.EnvPrefix, Out: out, Exit: func(int) {}}
	dests := []any{s}
	if c.Description != "" {
		if _, ok := any(s).(arg.Described); !ok {
			// go-arg takes the description from any destination.
			dests = append(dests, &described{text: c.Description})
		}
	}
	p, err := arg.NewParser(cfg, dests...)
	if err != nil {
		return nil, fmt.Errorf("settings of %s: %w", c.Name, err)
	}
	return p, nil
}

// Logging is the logger's settings; embed it in a settings struct.
type Logging struct {
	LogLevel  slog.Level `arg:"--log-level,env:LOG_LEVEL" default:"info" placeholder:"LEVEL" help:"debug, info, warn or error"`
	LogFormat string     `arg:"--log-format,env:LOG_FORMAT" default:"json" placeholder:"FORMAT" help:"json or text"`
}

func (l *Logging) logging() *Logging { return l }

// NewLogger returns the logger l describes, writing to w.
func (l Logging) NewLogger(w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: l.LogLevel}
	switch l.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("%w: --log-format %q: want json or text", ErrUsage, l.LogFormat)
	}
}
