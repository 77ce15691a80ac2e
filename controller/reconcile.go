package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/platforms"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/policy"
	"github.com/hermes-oci/hermes/registry/names"
)

// policies compiles the HermesPolicies in the informer cache, remembering
// each compiled generation.
type policies struct {
	client   client.Reader
	defaults policy.Defaults

	mu       sync.Mutex
	compiled map[types.UID]*policy.Policy
	gens     map[string]int64
}

func newPolicies(c client.Reader, d policy.Defaults) *policies {
	return &policies{client: c, defaults: d, compiled: map[types.UID]*policy.Policy{}, gens: map[string]int64{}}
}

// list returns every policy, compiled.
func (ps *policies) list(ctx context.Context) ([]*policy.Policy, error) {
	var list v1alpha1.HermesPolicyList
	if err := ps.client.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list HermesPolicies: %w", err)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]*policy.Policy, 0, len(list.Items))
	seen := map[types.UID]bool{}
	gens := make(map[string]int64, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		c := ps.compiled[p.UID]
		if c == nil || c.Generation != p.Generation {
			c = policy.Compile(p, ps.defaults)
			ps.compiled[p.UID] = c
		}
		seen[p.UID] = true
		gens[p.Name] = p.Generation
		out = append(out, c)
	}
	for uid := range ps.compiled {
		if !seen[uid] {
			delete(ps.compiled, uid)
		}
	}
	ps.gens = gens
	return out, nil
}

// generations returns the policies' generations as last listed.
func (ps *policies) generations() map[string]int64 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.gens
}

// compile returns p compiled (remembered for list).
func (ps *policies) compile(p *v1alpha1.HermesPolicy) *policy.Policy {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	c := ps.compiled[p.UID]
	if c == nil || c.Generation != p.Generation {
		c = policy.Compile(p, ps.defaults)
		ps.compiled[p.UID] = c
	}
	return c
}

// podReconciler recomputes one Pod's wants from the Pod, its Namespace and
// the policies as they are now.
type podReconciler struct {
	client   client.Reader
	policies *policies
	t        *tracker
	w        *workers
}

func (r *podReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := r.client.Get(ctx, req.NamespacedName, &pod); apierrors.IsNotFound(err) {
		r.t.setPod(req.NamespacedName, nil)
		return reconcile.Result{}, nil
	} else if err != nil {
		return reconcile.Result{}, err
	}
	wants, err := r.wants(ctx, &pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	r.w.enqueue(r.t.setPod(req.NamespacedName, wants)...)
	return reconcile.Result{}, nil
}

// wants lists what the active policies select of pod.
func (r *podReconciler) wants(ctx context.Context, pod *corev1.Pod) ([]want, error) {
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, nil // it will not start another container
	}
	ps, err := r.policies.list(ctx)
	if err != nil {
		return nil, err
	}
	ps = slices.DeleteFunc(ps, func(p *policy.Policy) bool { return !p.Active() })
	if len(ps) == 0 {
		return nil, nil
	}
	var nsLabels map[string]string
	var ns corev1.Namespace
	if err := r.client.Get(ctx, types.NamespacedName{Name: pod.Namespace}, &ns); err == nil {
		nsLabels = ns.Labels
	} else if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("namespace %s: %w", pod.Namespace, err)
	}
	src := podSource(pod)
	var wants []want
	for _, raw := range policy.PodImages(pod) {
		named, err := names.ParseReference(raw)
		if err != nil {
			logr.FromContextOrDiscard(ctx).V(1).Info("pod image is not a reference; ignored", "pod", pod.Namespace+"/"+pod.Name, "image", raw, "err", err)
			continue
		}
		norm := named.String()
		for _, p := range ps {
			if !p.MatchesNamespace(nsLabels) || !p.MatchesImage(raw, norm) {
				continue
			}
			for _, pl := range p.Platforms {
				wants = append(wants, want{policy: p.Name, image: ImageKey{Image: norm, Platform: platforms.Format(pl), Settings: p.Settings}, source: src})
			}
		}
	}
	return wants, nil
}

// podSource is where pod's pull credentials come from.
func podSource(pod *corev1.Pod) credSource {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	secrets := make([]string, 0, len(pod.Spec.ImagePullSecrets))
	for _, s := range pod.Spec.ImagePullSecrets {
		if s.Name != "" {
			secrets = append(secrets, s.Name)
		}
	}
	return credSource{Namespace: pod.Namespace, ServiceAccount: sa, PullSecrets: strings.Join(secrets, ",")}
}

// policyReconciler keeps what the rest needs of each policy (its UID for
// Events), warns once per generation about selectors that cannot be used,
// and asks for its status to be written.
type policyReconciler struct {
	client   client.Reader
	policies *policies
	t        *tracker
	events   *events

	mu     sync.Mutex
	warned map[types.UID]int64
}

func (r *policyReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p v1alpha1.HermesPolicy
	if err := r.client.Get(ctx, req.NamespacedName, &p); apierrors.IsNotFound(err) {
		r.events.setUID(req.Name, "")
		return reconcile.Result{}, nil
	} else if err != nil {
		return reconcile.Result{}, err
	}
	r.events.setUID(p.Name, p.UID)
	c := r.policies.compile(&p)
	r.mu.Lock()
	first := r.warned[p.UID] != p.Generation
	r.warned[p.UID] = p.Generation
	r.mu.Unlock()
	if first {
		log := logr.FromContextOrDiscard(ctx).WithValues("policy", p.Name, "generation", p.Generation)
		for _, bad := range c.Invalid {
			log.Info("image selector cannot be used; the policy's other selectors still apply", "selector", bad.String())
			r.events.warning(p.Name, v1alpha1.ReasonInvalidSelector, "%s", bad.String())
		}
		for _, pr := range c.Problems {
			log.Info("policy field cannot be used", "problem", pr)
			r.events.warning(p.Name, "InvalidSpec", "%s", pr)
		}
	}
	r.t.mu.Lock()
	r.t.markDirty(p.Name)
	r.t.mu.Unlock()
	return reconcile.Result{}, nil
}
