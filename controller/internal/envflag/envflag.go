// Package envflag declares each command-line setting once: flag name,
// environment variable, default and help together. A flag given on the
// command line wins over the environment, which wins over the default.
package envflag

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Set wraps a flag.FlagSet.
type Set struct {
	*flag.FlagSet
	errs []error
}

// New returns a Set that reports errors (instead of exiting).
func New(name string) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &Set{FlagSet: fs}
}

func (s *Set) env(env string) (string, bool) {
	if env == "" {
		return "", false
	}
	return os.LookupEnv(env)
}

func help(usage, env string) string {
	if env == "" {
		return usage
	}
	return fmt.Sprintf("%s (env %s)", usage, env)
}

// String declares a string setting.
func (s *Set) String(p *string, name, env, def, usage string) {
	s.StringVar(p, name, fromEnv(s, env, def, func(v string) (string, error) { return v, nil }), help(usage, env))
}

// Int declares an int setting.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	s.IntVar(p, name, fromEnv(s, env, def, strconv.Atoi), help(usage, env))
}

// Bool declares a bool setting.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	s.BoolVar(p, name, fromEnv(s, env, def, strconv.ParseBool), help(usage, env))
}

// Size declares a byte-size setting written as "4194304", "4MiB", "4M"
// (binary) or "4MB" (decimal).
func (s *Set) Size(p *int64, name, env string, def int64, usage string) {
	*p = fromEnv(s, env, def, ParseSize)
	s.Func(name, help(usage, env)+fmt.Sprintf(" (default %s)", FormatSize(*p)), func(v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*p = n
		return nil
	})
}

// fromEnv returns env's value parsed, or def when env is unset; a value that
// does not parse is reported by Parse.
func fromEnv[T any](s *Set, env string, def T, parse func(string) (T, error)) T {
	v, ok := s.env(env)
	if !ok {
		return def
	}
	t, err := parse(v)
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("%s=%q: %w", env, v, err))
		return def
	}
	return t
}

// Parse parses args and reports environment errors too.
func (s *Set) Parse(args []string) error {
	if len(s.errs) > 0 {
		return s.errs[0]
	}
	return s.FlagSet.Parse(args)
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize parses a byte size such as "10MiB".
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("size %q: not a non-negative number of %s", v, u.suffix)
			}
			return int64(n * float64(u.mult)), nil
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want bytes or a number with KiB, MiB, GiB, KB, MB, GB", v)
	}
	return n, nil
}

// FormatSize writes n in the largest binary unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}
