package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hermes-oci/hermes/registry/cli"
)

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := cli.Run(context.Background(), command, []string{"--help"}, &stdout, &stderr); code != cli.ExitOK {
		t.Fatalf("--help: exit %d, stderr %s", code, stderr.String())
	}
	for _, want := range []string{"--cache-registry", "--build-concurrency", "HERMES_CONTROLLER_BUILD_TIMEOUT", "--addr", "--leader-elect", "--allow-anonymous-writes"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestSettings(t *testing.T) {
	t.Setenv("HERMES_CONTROLLER_BUILD_CONCURRENCY", "6")
	var s settings
	if err := cli.Parse(command, &s, []string{"--resolve-ttl", "5s"}); err != nil {
		t.Fatal(err)
	}
	if s.BuildConcurrency != 6 || s.ResolveTTL != 5*time.Second || !s.LeaderElect || s.BuildTimeout != time.Hour || s.Addr != ":5000" || s.LogFormat != "json" ||
		s.LeaseDuration != 15*time.Second || s.RenewDeadline != 10*time.Second || s.RetryPeriod != 2*time.Second || s.LeaseID != "hermes-controller" || s.ArtifactGCInterval != 10*time.Minute || s.GCInterval != time.Hour {
		t.Fatalf("settings %+v", s)
	}
	// Leader election is on unless turned off; outside a cluster it needs
	// a namespace, and durations that client-go accepts.
	var off settings
	if err := cli.Parse(command, &off, []string{"--leader-elect=false"}); err != nil || off.LeaderElect {
		t.Fatalf("--leader-elect=false: %v %v", off.LeaderElect, err)
	}
	if err := checkLeaderElection(&s); err == nil || !strings.Contains(err.Error(), "--leader-election-namespace") {
		t.Errorf("no namespace outside a cluster: %v", err)
	}
	s.LeaseNamespace, s.RenewDeadline = "hermes", 20*time.Second
	if err := checkLeaderElection(&s); err == nil || !strings.Contains(err.Error(), "--renew-deadline") {
		t.Errorf("renew deadline past the lease: %v", err)
	}
	s.RenewDeadline = 10 * time.Second
	if err := checkLeaderElection(&s); err != nil {
		t.Error(err)
	}
	var stdout, stderr bytes.Buffer
	code := cli.Run(context.Background(), command, []string{"--kubeconfig", "/nonexistent/kubeconfig"}, &stdout, &stderr)
	if code != cli.ExitError || !strings.Contains(stderr.String(), "/nonexistent/kubeconfig") {
		t.Fatalf("bad kubeconfig: exit %d, stderr %q", code, stderr.String())
	}
}
