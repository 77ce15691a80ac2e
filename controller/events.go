package controller

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/hermes-oci/hermes/api/v1alpha1"
)

// events records Events on HermesPolicies, which need the object's UID.
type events struct {
	rec recorder.EventRecorder

	mu   sync.Mutex
	uids map[string]types.UID // policy name -> UID
}

func newEvents(rec recorder.EventRecorder) *events {
	return &events{rec: rec, uids: map[string]types.UID{}}
}

func (e *events) setUID(policy string, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if uid == "" {
		delete(e.uids, policy)
	} else {
		e.uids[policy] = uid
	}
}

func (e *events) object(policy string) (*v1alpha1.HermesPolicy, bool) {
	e.mu.Lock()
	uid, ok := e.uids[policy]
	e.mu.Unlock()
	if !ok || e.rec == nil {
		return nil, false
	}
	return &v1alpha1.HermesPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "HermesPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: policy, UID: uid},
	}, true
}

func (e *events) normal(policy, reason, format string, args ...any) {
	e.emit(policy, corev1.EventTypeNormal, reason, format, args...)
}

func (e *events) warning(policy, reason, format string, args ...any) {
	e.emit(policy, corev1.EventTypeWarning, reason, format, args...)
}

// maxNote is the events.k8s.io limit on a note.
const maxNote = 1024

func (e *events) emit(policy, eventType, reason, format string, args ...any) {
	obj, ok := e.object(policy)
	if !ok {
		return
	}
	note := fmt.Sprintf(format, args...)
	if len(note) > maxNote {
		note = note[:maxNote-3] + "..."
	}
	e.rec.Eventf(obj, nil, eventType, reason, reason, "%s", note)
}
