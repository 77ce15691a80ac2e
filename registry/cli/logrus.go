package cli

import (
	"context"
	"io"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// RouteLibraryLogs sends what libraries log through logrus' process-wide
// standard logger (distribution; containerd and soci through
// github.com/containerd/log) to h, so the process writes one log in one
// format. It changes process-wide state: Main calls it, once.
//
// Two of distribution's habits are toned down: it logs every 4xx answer as
// an error, but for a cache a miss (404) is routine and a client's mistake is
// the client's to report; and it logs every request at info, which the
// registry does itself. Both go to debug.
func RouteLibraryLogs(h slog.Handler) {
	l := logrus.StandardLogger()
	l.SetOutput(io.Discard)
	l.SetFormatter(discardFormatter{})
	l.ReplaceHooks(logrus.LevelHooks{})
	l.SetLevel(logrus.ErrorLevel)
	for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if h.Enabled(context.Background(), lv) {
			l.SetLevel(toLogrus(lv))
			break
		}
	}
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
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 && lvl > slog.LevelDebug {
		lvl = slog.LevelDebug // a request distribution answered: logged by the registry
	}
	if !s.h.Enabled(ctx, lvl) {
		return nil
	}
	r := slog.NewRecord(e.Time, lvl, e.Message, 0)
	for k, v := range e.Data {
		if k == "go.version" {
			continue
		}
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
