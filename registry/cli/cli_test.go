package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type testSettings struct {
	Logging
	Addr    string        `arg:"--addr,env:ADDR" default:":5000" help:"listen address"`
	Auth    bool          `arg:"--auth,env:AUTH" help:"require auth"`
	TTL     time.Duration `arg:"--ttl,env:TTL" default:"30s" help:"a duration"`
	Span    Size          `arg:"--span,env:SPAN" default:"4MiB" help:"a size"`
	Workers int           `arg:"--workers,env:WORKERS" default:"2" help:"a count"`
}

func testCommand(run func(context.Context, *testSettings) error) Command[testSettings] {
	return Command[testSettings]{Name: "t", Description: "t does things.", EnvPrefix: "T_", Run: run}
}

func TestPrecedence(t *testing.T) {
	t.Setenv("T_ADDR", ":6000")
	t.Setenv("T_TTL", "1m")
	t.Setenv("T_AUTH", "true")
	var s testSettings
	if err := Parse(testCommand(nil), &s, []string{"--ttl", "5s", "-span=1MiB"}); err != nil {
		t.Fatal(err)
	}
	if s.Addr != ":6000" || s.TTL != 5*time.Second || !s.Auth || s.Span != 1<<20 || s.Workers != 2 || s.LogFormat != "json" || s.LogLevel != slog.LevelInfo {
		t.Fatalf("got %+v", s)
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--addr", "x", "--help"}} {
		var stdout, stderr bytes.Buffer
		ran := false
		code := Run(context.Background(), testCommand(func(context.Context, *testSettings) error { ran = true; return nil }), args, &stdout, &stderr)
		if code != ExitOK || ran {
			t.Fatalf("%q: exit %d, ran %v; want 0 without running", args, code, ran)
		}
		help := stdout.String()
		for _, want := range []string{"t does things.", "--addr", "T_ADDR", "default: :5000", "--auth", "--span", "default: 4MiB", "--log-format"} {
			if !strings.Contains(help, want) {
				t.Errorf("%q: help lacks %q:\n%s", args, want, help)
			}
		}
		// A bool without a default must not print an empty one.
		for _, line := range strings.Split(help, "\n") {
			if strings.Contains(line, "--auth") && strings.Contains(line, "default") {
				t.Errorf("bool flag line shows a default: %q", line)
			}
		}
		if stderr.Len() != 0 {
			t.Errorf("%q: help wrote to stderr: %s", args, stderr.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"unknown flag":   {args: []string{"--nope"}, want: "unknown argument --nope"},
		"bad duration":   {args: []string{"--ttl", "soon"}, want: "ttl"},
		"bad size":       {args: []string{"--span", "big"}, want: "size"},
		"bad env":        {env: map[string]string{"T_WORKERS": "many"}, want: "T_WORKERS"},
		"bad log format": {args: []string{"--log-format", "xml"}, want: "xml"},
		"bad log level":  {args: []string{"--log-level", "loud"}, want: "log-level"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := Run(context.Background(), testCommand(func(context.Context, *testSettings) error { t.Fatal("ran"); return nil }), c.args, &stdout, &stderr)
			if code != ExitUsage {
				t.Fatalf("exit %d, want %d", code, ExitUsage)
			}
			if !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "Usage:") {
				t.Fatalf("stderr lacks %q or the usage:\n%s", c.want, stderr.String())
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), testCommand(func(ctx context.Context, s *testSettings) error {
		return errors.New("disk on fire")
	}), nil, &stdout, &stderr)
	if code != ExitError || !strings.Contains(stderr.String(), "t: disk on fire") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	code = Run(context.Background(), testCommand(func(ctx context.Context, s *testSettings) error {
		return errors.Join(ErrUsage, errors.New("want one IMAGE"))
	}), nil, &stdout, &stderr)
	if code != ExitUsage || !strings.Contains(stderr.String(), "want one IMAGE") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{"0": 0, "4194304": 4 << 20, "4MiB": 4 << 20, "4M": 4 << 20, "10MB": 10e6, "1.5KiB": 1536, "1GiB": 1 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1", "-2MiB", "1TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
	if got := Size(10 << 20).String(); got != "10MiB" {
		t.Errorf("String = %q", got)
	}
}
