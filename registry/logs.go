package registry

import (
	"context"
	"io"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// RouteDistributionLogs sends what distribution logs to logger.
// distribution logs through logrus' process-wide standard logger, so this
// changes process-wide state: only main calls it, once. distribution's
// per-request lines are kept for debug level; Registry logs requests itself.
func RouteDistributionLogs(logger *slog.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetFormatter(discardFormatter{})
	std.ReplaceHooks(logrus.LevelHooks{})
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		std.SetLevel(logrus.DebugLevel)
	} else {
		std.SetLevel(logrus.WarnLevel)
	}
	std.AddHook(slogHook{logger: logger.With("component", "distribution")})
}

type discardFormatter struct{}

func (discardFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }

type slogHook struct{ logger *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	level := slog.LevelInfo
	switch {
	case e.Level <= logrus.ErrorLevel:
		level = slog.LevelError
	case e.Level == logrus.WarnLevel:
		level = slog.LevelWarn
	case e.Level >= logrus.DebugLevel:
		level = slog.LevelDebug
	}
	// distribution logs every 4xx answer as an error; for a cache, a miss
	// (404) is routine and a client mistake is the client's to report.
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 && level > slog.LevelDebug {
		level = slog.LevelDebug
	}
	attrs := make([]slog.Attr, 0, len(e.Data))
	for k, v := range e.Data {
		if k == "go.version" {
			continue
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	ctx := e.Context
	if ctx == nil {
		ctx = context.Background()
	}
	h.logger.LogAttrs(ctx, level, e.Message, attrs...)
	return nil
}
