package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/awslabs/soci-snapshotter/config"
	"github.com/awslabs/soci-snapshotter/fs/layer"
	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/snapshot"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hermes-oci/hermes/snapshotter/fusesession"
)

// sessions puts package fusesession between soci's snapshotter and its
// filesystem, so that lazily mounted layers outlive the process.
type sessions struct {
	root    string
	hermes  Hermes
	metrics *fusesession.Metrics

	holder *fusesession.Client
	fs     *fusesession.FS
}

func newSessions(root string, h Hermes, reg prometheus.Registerer) *sessions {
	if !h.SurviveRestarts {
		return nil
	}
	return &sessions{root: root, hermes: h, metrics: fusesession.NewMetrics(reg)}
}

// wrap connects to (or starts) the holder, takes the mounts it holds
// over, and returns the filesystem soci's snapshotter is to use; call
// finish once that snapshotter has restored its snapshots.
func (s *sessions) wrap(ctx context.Context, sociFS snapshot.FileSystem, fsRoot string, cfg *config.Config,
	hosts source.RegistryHosts, md metadata.Store, st store.Store, opq layer.OverlayOpaqueType) (snapshot.FileSystem, error) {
	log := logr.FromContextOrDiscard(ctx)
	sock := s.hermes.HolderSocket
	if sock == "" {
		sock = fusesession.SocketPath(s.root)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(filepath.Base(exe), "hermes-snapshotter") {
		exe = "" // a test binary: it would not run the holder
	}
	holder, err := fusesession.StartHolder(sock, exe, s.root, filepath.Join(s.root, "fusesession", "holder.log"),
		"--socket", sock, "--restart-timeout", s.hermes.RestartTimeout.D().String(), "--idle-exit", "10s",
		"--log-format", "text")
	if err != nil {
		log.Error(err, "lazily mounted layers will not survive a restart of the snapshotter")
		return sociFS, nil
	}
	hello, err := holder.Hello(s.hermes.RestartTimeout.D())
	if err != nil {
		holder.Close()
		return nil, err
	}
	gen, err := fusesession.NextGeneration(s.root)
	if err != nil {
		holder.Close()
		return nil, err
	}
	if hello.Failed > 0 {
		log.Info("reads failed with EIO while the snapshotter was away longer than restart_timeout", "requests", hello.Failed,
			"restartTimeout", s.hermes.RestartTimeout.D())
	}
	r, err := layer.NewResolver(fsRoot, cfg.FSConfig, nil, md, st, opq, nil)
	if err != nil {
		holder.Close()
		return nil, fmt.Errorf("layer resolver: %w", err)
	}
	fc := cfg.FuseConfig
	s.holder = holder
	s.fs = fusesession.NewFS(ctx, fusesession.FSOptions{
		Root: s.root, Soci: sociFS, Resolver: r, Store: st, GetSources: source.FromDefaultLabels(hosts),
		AttrTimeout: time.Duration(fc.AttrTimeout) * time.Second, EntryTimeout: time.Duration(fc.EntryTimeout) * time.Second,
		NegativeTimeout: time.Duration(fc.NegativeTimeout) * time.Second, DisableVerification: cfg.DisableVerification,
		Debug: cfg.Debug, Holder: holder, DownSince: hello.DownSince, Generation: gen, Metrics: s.metrics,
	})
	if _, err := s.fs.Restore(ctx); err != nil {
		log.Error(err, "taking over the held mounts; they are mounted anew")
	}
	return s.fs, nil
}

func (s *sessions) finish() {
	if s != nil && s.fs != nil {
		s.fs.FinishRestore()
	}
}

// handover keeps the lazy mounts for the next process when this one stops.
func (s *sessions) handover() {
	if s != nil && s.fs != nil {
		s.fs.Handover()
	}
}

func (s *sessions) close() {
	if s != nil && s.holder != nil {
		s.holder.Close()
	}
}
