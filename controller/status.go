package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/policy"
)

// statusWriter writes HermesPolicy status from the tracker: at most once
// per interval per policy, only when it changed, retrying conflicts. So a
// policy with 500 images building costs a write every interval, not one per
// event.
type statusWriter struct {
	client   client.Client // reads from the cache, writes to the API server
	reader   client.Reader // reads from the API server, after a conflict
	policies *policies
	t        *tracker
	interval time.Duration
	metrics  *metrics

	written map[string]v1alpha1.HermesPolicyStatus // last written, by policy
}

// NeedLeaderElection: one writer.
func (s *statusWriter) NeedLeaderElection() bool { return true }

// Start writes until ctx ends.
func (s *statusWriter) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("status")
	s.written = map[string]v1alpha1.HermesPolicyStatus{}
	last := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.t.wake:
		}
		// Coalesce: whatever else changes within the interval goes into
		// the same write.
		if wait := s.interval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		last = time.Now()
		for _, name := range s.t.takeDirty() {
			if err := s.write(ctx, name); err != nil {
				log.Error(err, "writing policy status; will try again", "policy", name)
				s.t.mu.Lock()
				s.t.markDirty(name)
				s.t.mu.Unlock()
			}
		}
	}
}

func (s *statusWriter) write(ctx context.Context, name string) error {
	var reader client.Reader = s.client
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var p v1alpha1.HermesPolicy
		if err := reader.Get(ctx, types.NamespacedName{Name: name}, &p); apierrors.IsNotFound(err) {
			delete(s.written, name)
			return nil
		} else if err != nil {
			return err
		}
		desired := s.desired(&p)
		if prev, ok := s.written[name]; ok && equality.Semantic.DeepEqual(prev, desired) {
			return nil // written already; the cache may not show it yet
		}
		if equality.Semantic.DeepEqual(p.Status, desired) {
			s.written[name] = desired
			return nil
		}
		p.Status = desired
		err := s.client.Status().Update(ctx, &p)
		switch {
		case err == nil:
			s.metrics.statusWrites.WithLabelValues("ok").Inc()
			s.written[name] = desired
		case apierrors.IsConflict(err):
			s.metrics.statusWrites.WithLabelValues("conflict").Inc()
			reader = s.reader // the cache is behind: read the server
		case apierrors.IsNotFound(err):
			delete(s.written, name)
			return nil
		default:
			s.metrics.statusWrites.WithLabelValues("error").Inc()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("status of HermesPolicy %s: %w", name, err)
	}
	return nil
}

// desired is the status of p as the tracker sees it now.
func (s *statusWriter) desired(p *v1alpha1.HermesPolicy) v1alpha1.HermesPolicyStatus {
	c := s.policies.compile(p)
	counts, images := s.t.imageStatuses(p.Name)
	st := v1alpha1.HermesPolicyStatus{ObservedGeneration: p.Generation, Counts: counts, Images: images}
	st.Conditions = append(st.Conditions, p.Status.Conditions...)
	meta.SetStatusCondition(&st.Conditions, readyCondition(c, counts, images, p.Generation))
	return st
}

// readyCondition says whether every image the policy wants has its index.
func readyCondition(c *policy.Policy, n v1alpha1.ImageCounts, images []v1alpha1.ImageStatus, gen int64) metav1.Condition {
	cond := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: gen}
	switch {
	case len(c.Invalid) > 0:
		cond.Reason = v1alpha1.ReasonInvalidSelector
		cond.Message = fmt.Sprintf("%d of %d image selectors cannot be used (the others apply): %s", len(c.Invalid), len(c.Invalid)+c.Selectors(), c.Invalid[0])
	case c.Paused:
		cond.Reason, cond.Message = v1alpha1.ReasonPaused, "paused: nothing is built; existing indexes are kept"
	case n.Total == 0:
		cond.Reason, cond.Message = v1alpha1.ReasonNoImages, "no running Pod uses an image this policy selects"
	case n.Failed > 0:
		cond.Reason = v1alpha1.ReasonBuildFailed
		cond.Message = fmt.Sprintf("%d of %d images failed", n.Failed, n.Total)
		for _, im := range images {
			if im.Phase == v1alpha1.PhaseFailed {
				cond.Message += fmt.Sprintf("; %s (%s): %s", im.Image, im.Platform, im.Message)
				break
			}
		}
	case n.Pending+n.Building > 0:
		cond.Reason = v1alpha1.ReasonBuilding
		cond.Message = fmt.Sprintf("%d of %d images ready, %d building, %d pending", n.Ready+n.Skipped, n.Total, n.Building, n.Pending)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha1.ReasonAllReady
		cond.Message = fmt.Sprintf("%d of %d images have an index", n.Ready, n.Total)
		if n.Skipped > 0 {
			cond.Message += fmt.Sprintf(" (%d skipped: no layer large enough to index)", n.Skipped)
		}
	}
	for _, pr := range c.Problems {
		cond.Message += "; " + pr
	}
	if len(cond.Message) > 32768 {
		cond.Message = cond.Message[:32765] + "..."
	}
	return cond
}
