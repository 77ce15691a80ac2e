package envflag

import (
	"strings"
	"testing"
)

func TestPrecedence(t *testing.T) {
	t.Setenv("T_STR", "from-env")
	t.Setenv("T_SIZE", "2MiB")
	t.Setenv("T_BOOL", "true")
	var (
		str, other string
		size       int64
		n          int
		b          bool
	)
	s := New("t")
	s.String(&str, "str", "T_STR", "default", "")
	s.String(&other, "other", "T_UNSET", "default", "")
	s.Size(&size, "size", "T_SIZE", 1, "")
	s.Int(&n, "n", "T_UNSET", 7, "")
	s.Bool(&b, "b", "T_BOOL", false, "")
	if err := s.Parse([]string{"-str", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if str != "from-flag" || other != "default" || size != 2<<20 || n != 7 || !b {
		t.Fatalf("got %q %q %d %d %v", str, other, size, n, b)
	}
}

func TestBadEnv(t *testing.T) {
	t.Setenv("T_N", "many")
	var n int
	s := New("t")
	s.Int(&n, "n", "T_N", 1, "")
	if err := s.Parse(nil); err == nil || !strings.Contains(err.Error(), "T_N") {
		t.Fatalf("got %v, want an error naming T_N", err)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4194304": 4 << 20, "4MiB": 4 << 20, "4M": 4 << 20, "10MB": 10e6, "1.5KiB": 1536, "1GiB": 1 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1", "-2MiB", "1TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
	if got := FormatSize(10 << 20); got != "10MiB" {
		t.Errorf("FormatSize = %q", got)
	}
}
