package daemon

import (
	"context"
	"io"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// RouteLibraryLogs sends what soci and containerd's packages log (through
// logrus, via github.com/containerd/log) to h, so that the process writes
// one log in one format. Entries below level are dropped early.
func RouteLibraryLogs(h slog.Handler, level slog.Level) {
	l := logrus.StandardLogger()
	l.SetOutput(io.Discard)
	l.SetFormatter(discardFormatter{})
	l.SetLevel(toLogrus(level))
	l.ReplaceHooks(logrus.LevelHooks{})
	l.AddHook(&slogHook{h: h})
}

type discardFormatter struct{}

func (discardFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

type slogHook struct{ h slog.Handler }

func (*slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (s *slogHook) Fire(e *logrus.Entry) error {
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	lvl := fromLogrus(e.Level)
	if !s.h.Enabled(ctx, lvl) {
		return nil
	}
	r := slog.NewRecord(e.Time, lvl, e.Message, 0)
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		r.AddAttrs(slog.Any(k, v))
	}
	return s.h.Handle(ctx, r)
}

func fromLogrus(l logrus.Level) slog.Level {
	switch {
	case l <= logrus.ErrorLevel:
		return slog.LevelError
	case l == logrus.WarnLevel:
		return slog.LevelWarn
	case l == logrus.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

func toLogrus(l slog.Level) logrus.Level {
	switch {
	case l >= slog.LevelError:
		return logrus.ErrorLevel
	case l >= slog.LevelWarn:
		return logrus.WarnLevel
	case l >= slog.LevelInfo:
		return logrus.InfoLevel
	default:
		return logrus.TraceLevel
	}
}
