package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// Serve runs an HTTP server for h on l until ctx ends, then shuts it down
// gracefully. serve is srv.Serve or srv.ServeTLS; nil means Serve. It is how
// every Hermes HTTP listener (API, ops, metrics) is run.
func Serve(ctx context.Context, name string, l net.Listener, h http.Handler, serve func(*http.Server, net.Listener) error) error {
	log := logr.FromContextOrDiscard(ctx)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	if serve == nil {
		serve = (*http.Server).Serve
	}
	done := make(chan error, 1)
	go func() { done <- serve(srv, l) }()
	log.Info("serving", "server", name, "addr", l.Addr().String())
	select {
	case err := <-done:
		return fmt.Errorf("%s server: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("%s server shutdown: %w", name, err)
	}
	return nil
}
