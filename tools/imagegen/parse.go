package imagegen

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize parses a byte count such as "270MiB", "1.5GB", "4096" or "64k".
// Binary (KiB, MiB, GiB, TiB, and k/m/g/t) and decimal (KB, MB, GB, TB)
// suffixes are accepted.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
		{"B", 1}, {"", 1},
	}
	t := strings.TrimSpace(s)
	for _, u := range units {
		num, ok := strings.CutSuffix(t, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || f < 0 {
			break
		}
		return int64(f * u.mult), nil
	}
	return 0, fmt.Errorf("%w: size %q: want a number with an optional unit (270MiB, 1GB)", ErrInvalidSpec, s)
}

// ParseLayers parses a comma-separated layer list as the imagegen CLI takes
// it: kind:size[:files=N][:seed=N][:plain], where kind is random or
// compressible, and busybox stands alone. Layers without a seed get their
// position (1-based), so equal-looking layers still differ.
//
//	busybox,random:270MiB,compressible:300MiB:files=5000,random:1GB:seed=7:plain
func ParseLayers(s string) ([]Layer, error) {
	var out []Layer
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		l := Layer{Seed: int64(i + 1)}
		switch parts[0] {
		case "busybox":
			if len(parts) != 1 {
				return nil, fmt.Errorf("%w: layer %q: busybox takes no size", ErrInvalidSpec, item)
			}
			out = append(out, Layer{Kind: Busybox})
			continue
		case "random":
			l.Kind = Random
		case "compressible":
			l.Kind = Compressible
		default:
			return nil, fmt.Errorf("%w: layer %q: kind must be busybox, random or compressible", ErrInvalidSpec, item)
		}
		if len(parts) < 2 {
			return nil, fmt.Errorf("%w: layer %q: missing size (kind:size)", ErrInvalidSpec, item)
		}
		var err error
		if l.Size, err = ParseSize(parts[1]); err != nil {
			return nil, fmt.Errorf("layer %q: %w", item, err)
		}
		for _, opt := range parts[2:] {
			k, v, _ := strings.Cut(opt, "=")
			switch k {
			case "files":
				if l.Files, err = strconv.Atoi(v); err != nil || l.Files < 1 {
					return nil, fmt.Errorf("%w: layer %q: files=%q", ErrInvalidSpec, item, v)
				}
			case "seed":
				if l.Seed, err = strconv.ParseInt(v, 10, 64); err != nil {
					return nil, fmt.Errorf("%w: layer %q: seed=%q", ErrInvalidSpec, item, v)
				}
			case "plain":
				l.Uncompressed = true
			default:
				return nil, fmt.Errorf("%w: layer %q: unknown option %q (files=, seed=, plain)", ErrInvalidSpec, item, opt)
			}
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no layers in %q", ErrInvalidSpec, s)
	}
	return out, nil
}
