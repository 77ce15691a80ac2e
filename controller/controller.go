package controller

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlbuilder "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/hermes-oci/hermes/api/v1alpha1"
	"github.com/hermes-oci/hermes/controller/policy"
)

// Controller is the controller wired into a controller-runtime manager.
type Controller struct {
	t *tracker
	w *workers
}

// Setup adds the controller to mgr: the Pod and policy reconcilers, the
// resolve and build workers and the status writer. mgr's scheme must know
// v1alpha1 and the core types; its cache should use CacheOptions. Pull
// secrets are read straight from the API server (get only) through a client
// made from mgr's config.
func Setup(mgr manager.Manager, o Options) (*Controller, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	t := newTracker(o.Now)
	ps := newPolicies(mgr.GetClient(), policy.Defaults{Platforms: o.Platforms, Settings: *o.Settings})
	ev := newEvents(mgr.GetEventRecorder("hermes-controller"))
	w := newWorkers(o, t, o.Builder, newKubeCredentials(cs, o.CredentialsTTL), ps.generations)
	m, err := newMetrics(crmetrics.Registry, t, w.depth)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	w.metrics, w.events = m, ev

	c := mgr.GetClient()
	err = ctrl.NewControllerManagedBy(mgr).Named("hermes-pods").
		For(&corev1.Pod{}, ctrlbuilder.WithPredicates(podChanged())).
		// A policy or a namespace's labels change what every Pod (of the
		// namespace) wants: the Pods are reconciled again, one at a time
		// each, so no two evaluations of one Pod race.
		Watches(&v1alpha1.HermesPolicy{}, handler.EnqueueRequestsFromMapFunc(podsOf(c, nil)),
			ctrlbuilder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(podsOf(c, func(o client.Object) []client.ListOption {
			return []client.ListOption{client.InNamespace(o.GetName())}
		})), ctrlbuilder.WithPredicates(predicate.LabelChangedPredicate{})).
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: 4}).
		Complete(&podReconciler{client: c, policies: ps, t: t, w: w})
	if err != nil {
		return nil, fmt.Errorf("pod controller: %w", err)
	}
	err = ctrl.NewControllerManagedBy(mgr).Named("hermes-policies").
		For(&v1alpha1.HermesPolicy{}, ctrlbuilder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(&policyReconciler{client: c, policies: ps, t: t, events: ev, warned: map[types.UID]int64{}})
	if err != nil {
		return nil, fmt.Errorf("policy controller: %w", err)
	}
	if err := mgr.Add(w); err != nil {
		return nil, err
	}
	if o.Cache != nil {
		gc := &collector{cache: *o.Cache, t: t, ps: ps, requeue: func(k Key) { w.buildQ.Add(k) }, interval: o.GCInterval, now: o.Now, metrics: m}
		w.usage = gc.ensure
		if err := mgr.Add(gc); err != nil {
			return nil, err
		}
	}
	if err := mgr.Add(&statusWriter{client: c, reader: mgr.GetAPIReader(), policies: ps, t: t, interval: o.StatusInterval, metrics: m}); err != nil {
		return nil, err
	}
	return &Controller{t: t, w: w}, nil
}

// podsOf maps an object to reconcile requests for the Pods that opts
// select (every Pod when opts is nil).
func podsOf(c client.Reader, opts func(client.Object) []client.ListOption) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list corev1.PodList
		var lo []client.ListOption
		if opts != nil {
			lo = opts(o)
		}
		if err := c.List(ctx, &list, lo...); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing Pods to reconcile again")
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return out
	}
}

// podChanged passes Pod updates that can change what the Pod wants: its
// images, pull secrets, service account, and the end of its life. The
// kubelet's status updates are most updates, and none of them matter.
func podChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Pod)
			n, ok2 := e.ObjectNew.(*corev1.Pod)
			if !ok1 || !ok2 {
				return true
			}
			return !slices.Equal(policy.PodImages(o), policy.PodImages(n)) ||
				podSource(o) != podSource(n) ||
				(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
				finished(o) != finished(n)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// CacheOptions keep the informer cache small: Pods are kept with only what
// the controller reads (names, images, pull secrets, service account,
// phase), which for 10,000 Pods is a few MiB instead of tens.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Transform: slimPod},
		},
	}
}

func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{TypeMeta: p.TypeMeta}
	out.Name, out.Namespace, out.UID, out.ResourceVersion = p.Name, p.Namespace, p.UID, p.ResourceVersion
	out.DeletionTimestamp, out.Generation = p.DeletionTimestamp, p.Generation
	out.Spec.ServiceAccountName = p.Spec.ServiceAccountName
	out.Spec.ImagePullSecrets = p.Spec.ImagePullSecrets
	out.Spec.NodeName = p.Spec.NodeName
	keep := func(cs []corev1.Container) []corev1.Container {
		out := make([]corev1.Container, len(cs))
		for i, c := range cs {
			out[i] = corev1.Container{Name: c.Name, Image: c.Image}
		}
		return out
	}
	out.Spec.InitContainers, out.Spec.Containers = keep(p.Spec.InitContainers), keep(p.Spec.Containers)
	for _, c := range p.Spec.EphemeralContainers {
		out.Spec.EphemeralContainers = append(out.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name, Image: c.Image}})
	}
	out.Status.Phase = p.Status.Phase
	return out, nil
}
