package controller

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hermes-oci/hermes/api/v1alpha1"
)

// credSource is where a Pod's pull credentials come from.
type credSource struct {
	Namespace      string
	ServiceAccount string
	PullSecrets    string // names, comma-separated, in the Pod's order
}

func (s credSource) String() string {
	return fmt.Sprintf("%s/%s secrets [%s]", s.Namespace, s.ServiceAccount, s.PullSecrets)
}

// want is one policy wanting one image of one Pod.
type want struct {
	policy string
	image  ImageKey
	source credSource
}

// maxSources bounds the credential sources remembered per image: the most
// recent Pods' win.
const maxSources = 4

// imageState is what is known of one ImageKey.
type imageState struct {
	key      ImageKey
	wantedBy map[string]int // policy -> Pods wanting it
	sources  []credSource   // most recent first

	// Resolution: the Key it resolved to, the digest the reference named
	// (an index, or the manifest itself), and when.
	build      *Key
	top        digest.Digest
	resolvedAt time.Time
	published  digest.Digest // top, once stored in the cache under the tag

	// Before a build is known: Pending, or Failed with why.
	phase    v1alpha1.ImagePhase
	message  string
	since    time.Time
	failedFP string // credentials fingerprint of a terminal failure
	failedAt string // the wanting policies' generations then
}

// buildState is what is known of one Key.
type buildState struct {
	key    Key
	images map[ImageKey]struct{}

	phase    v1alpha1.ImagePhase
	message  string
	since    time.Time
	index    digest.Digest
	progress map[int]layerProgress // layer -> progress, while Building
	layers   int
	attempts int
	failedFP string
	failedAt string

	creds credentials // of the most recent resolution that led here
}

type layerProgress struct {
	size, done int64
	finished   bool
}

// tracker is the controller's picture of the world: which Pods want which
// images under which policies, what each image resolved to, where each
// build is. It is rebuilt from the API server and the registry after a
// restart. Safe for concurrent use.
type tracker struct {
	now func() time.Time

	mu     sync.Mutex
	pods   map[types.NamespacedName][]want
	images map[ImageKey]*imageState
	builds map[Key]*buildState
	dirty  map[string]bool // policies whose status may have changed
	wake   chan struct{}   // a policy became dirty
}

func newTracker(now func() time.Time) *tracker {
	if now == nil {
		now = time.Now
	}
	return &tracker{now: now, pods: map[types.NamespacedName][]want{}, images: map[ImageKey]*imageState{},
		builds: map[Key]*buildState{}, dirty: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (t *tracker) markDirty(policy string) {
	t.dirty[policy] = true
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *tracker) markImage(img *imageState) {
	for p := range img.wantedBy {
		t.markDirty(p)
	}
}

func (t *tracker) markBuild(b *buildState) {
	for k := range b.images {
		if img := t.images[k]; img != nil {
			t.markImage(img)
		}
	}
}

// setPod replaces a Pod's wants and returns the images it newly wants (or
// wants again after a failure: a new Pod may bring new credentials), for
// the resolve queue.
func (t *tracker) setPod(pod types.NamespacedName, wants []want) []ImageKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.pods[pod]
	oldSet := map[[2]any]bool{}
	for _, w := range old {
		oldSet[[2]any{w.policy, w.image}] = true
	}
	newSet := map[[2]any]bool{}
	var enqueue []ImageKey
	for _, w := range wants {
		newSet[[2]any{w.policy, w.image}] = true
		img := t.images[w.image]
		if img == nil {
			img = &imageState{key: w.image, wantedBy: map[string]int{}, phase: v1alpha1.PhasePending, since: t.now()}
			t.images[w.image] = img
		}
		if !oldSet[[2]any{w.policy, w.image}] {
			img.wantedBy[w.policy]++
			t.markDirty(w.policy)
		}
		img.addSource(w.source)
		if !slices.Contains(enqueue, w.image) {
			enqueue = append(enqueue, w.image)
		}
	}
	for _, w := range old {
		if !newSet[[2]any{w.policy, w.image}] {
			t.unwant(w)
		}
	}
	if len(wants) == 0 {
		delete(t.pods, pod)
	} else {
		t.pods[pod] = wants
	}
	return enqueue
}

func (img *imageState) addSource(s credSource) {
	if i := slices.Index(img.sources, s); i >= 0 {
		img.sources = slices.Delete(img.sources, i, i+1)
	}
	img.sources = slices.Insert(img.sources, 0, s)
	if len(img.sources) > maxSources {
		img.sources = img.sources[:maxSources]
	}
}

// unwant removes one want; an image nobody wants is forgotten (its
// artifact stays in the registry), and so is a build no image leads to.
func (t *tracker) unwant(w want) {
	img := t.images[w.image]
	if img == nil {
		return
	}
	t.markDirty(w.policy)
	if img.wantedBy[w.policy]--; img.wantedBy[w.policy] <= 0 {
		delete(img.wantedBy, w.policy)
	}
	if len(img.wantedBy) > 0 {
		return
	}
	delete(t.images, w.image)
	if img.build != nil {
		if b := t.builds[*img.build]; b != nil {
			delete(b.images, w.image)
			if len(b.images) == 0 && b.phase != v1alpha1.PhaseBuilding {
				delete(t.builds, b.key)
			}
		}
	}
}

// wanted reports whether anybody still wants image, and returns a copy of
// what a resolve worker needs.
func (t *tracker) image(k ImageKey) (sources []credSource, build *Key, resolvedAt time.Time, failedFP string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.images[k]
	if img == nil {
		return nil, nil, time.Time{}, "", false
	}
	if img.build != nil {
		b := *img.build
		build = &b
	}
	return slices.Clone(img.sources), build, img.resolvedAt, img.failedFP, true
}

// generations names the policies wanting an image with their
// generations: it changes when any of them is edited, added or removed.
func (t *tracker) generations(img *imageState, gens map[string]int64) string {
	ps := make([]string, 0, len(img.wantedBy))
	for p := range img.wantedBy {
		ps = append(ps, fmt.Sprintf("%s/%d", p, gens[p]))
	}
	slices.Sort(ps)
	return strings.Join(ps, ",")
}

// imageFailed records a terminal failure of an image's resolution.
func (t *tracker) imageFailed(k ImageKey, fp, gen string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.images[k]
	if img == nil {
		return
	}
	img.setPhase(t.now(), v1alpha1.PhaseFailed, err.Error())
	img.failedFP, img.failedAt, img.build = fp, gen, nil
	t.markImage(img)
}

// imageRetrying records a retryable failure of an image's resolution.
func (t *tracker) imageRetrying(k ImageKey, err error, after time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.images[k]
	if img == nil || img.build != nil {
		return
	}
	img.setPhase(t.now(), v1alpha1.PhasePending, fmt.Sprintf("retrying in %s: %v", after.Round(time.Second), err))
	t.markImage(img)
}

// shouldRetry says whether a terminal failure recorded with failedFP and
// failedAt may succeed now: credentials or a wanting policy changed.
func shouldRetry(failedFP, failedAt, fp, gen string) bool {
	return failedFP == "" || failedFP != fp || failedAt != gen
}

func (img *imageState) setPhase(now time.Time, p v1alpha1.ImagePhase, msg string) {
	if img.phase != p {
		img.since = now
	}
	img.phase, img.message = p, msg
}

func (b *buildState) setPhase(now time.Time, p v1alpha1.ImagePhase, msg string) {
	if b.phase != p {
		b.since = now
	}
	b.phase, b.message = p, msg
}

// linked records that image k resolved to top and build key bk with
// creds, and says whether the build should be queued: not Ready, Skipped or
// Building, and not a terminal failure that the same credentials and
// policies would repeat.
func (t *tracker) linked(k ImageKey, bk Key, top digest.Digest, creds credentials, gen string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.images[k]
	if img == nil {
		return false
	}
	if top != "" {
		img.top = top
	}
	img.resolvedAt = t.now()
	img.failedFP = ""
	if img.build != nil && *img.build != bk {
		if old := t.builds[*img.build]; old != nil {
			delete(old.images, k)
			if len(old.images) == 0 && old.phase != v1alpha1.PhaseBuilding {
				delete(t.builds, old.key)
			}
		}
	}
	img.build = &bk
	b := t.builds[bk]
	if b == nil {
		b = &buildState{key: bk, images: map[ImageKey]struct{}{}, phase: v1alpha1.PhasePending, since: t.now()}
		t.builds[bk] = b
	}
	b.images[k] = struct{}{}
	b.creds = creds
	t.markImage(img)
	switch b.phase {
	case v1alpha1.PhaseReady, v1alpha1.PhaseSkipped, v1alpha1.PhaseBuilding:
		return false
	case v1alpha1.PhaseFailed:
		return shouldRetry(b.failedFP, b.failedAt, creds.fingerprint, gen)
	}
	return true
}

// startBuild marks a build as running and returns its credentials; false
// if nobody wants it any more or it is done.
func (t *tracker) startBuild(k Key) (credentials, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.builds[k]
	if b == nil || len(b.images) == 0 {
		return credentials{}, false
	}
	switch b.phase {
	case v1alpha1.PhaseReady, v1alpha1.PhaseSkipped, v1alpha1.PhaseBuilding:
		return credentials{}, false
	}
	b.attempts++
	b.setPhase(t.now(), v1alpha1.PhaseBuilding, "")
	b.progress, b.layers = map[int]layerProgress{}, 0
	t.markBuild(b)
	return b.creds, true
}

// progress records a layer event of a running build.
func (t *tracker) progress(k Key, layer, layers int, size, done int64, finished bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.builds[k]
	if b == nil || b.phase != v1alpha1.PhaseBuilding {
		return
	}
	b.layers = layers
	b.progress[layer] = layerProgress{size: size, done: done, finished: finished}
	t.markBuild(b)
}

// buildDone records the end of a build: phase Ready (index set), Skipped
// (nothing to index), Pending (retrying) or Failed (terminal, with the
// credentials fingerprint and policy generations it failed with). It
// returns the policies that want the build, for Events.
func (t *tracker) buildDone(k Key, phase v1alpha1.ImagePhase, index digest.Digest, msg string, gens map[string]int64) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.builds[k]
	if b == nil {
		return nil
	}
	b.setPhase(t.now(), phase, msg)
	b.index, b.progress = index, nil
	if phase == v1alpha1.PhaseFailed {
		b.failedFP = b.creds.fingerprint
		b.failedAt = ""
		for ik := range b.images {
			if img := t.images[ik]; img != nil {
				b.failedAt = t.generations(img, gens)
				break
			}
		}
	}
	var policies []string
	for ik := range b.images {
		if img := t.images[ik]; img != nil {
			for p := range img.wantedBy {
				if !slices.Contains(policies, p) {
					policies = append(policies, p)
				}
			}
		}
	}
	t.markBuild(b)
	if len(b.images) == 0 {
		delete(t.builds, k)
	}
	slices.Sort(policies)
	return policies
}

// generationOf returns what a failure of k is recorded with, from the
// policies' current generations gens.
func (t *tracker) generationOf(k ImageKey, gens map[string]int64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.images[k]
	if img == nil {
		return ""
	}
	return t.generations(img, gens)
}

// imagesOf returns the images a policy wants.
func (t *tracker) imagesOf(policy string) []ImageKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ImageKey
	for k, img := range t.images {
		if img.wantedBy[policy] > 0 {
			out = append(out, k)
		}
	}
	return out
}

// allImages returns every wanted image (periodic re-resolution of tags).
func (t *tracker) allImages() []ImageKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ImageKey, 0, len(t.images))
	for k := range t.images {
		out = append(out, k)
	}
	return out
}

// takeDirty returns and clears the policies whose status may have changed.
func (t *tracker) takeDirty() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.dirty))
	for p := range t.dirty {
		out = append(out, p)
	}
	clear(t.dirty)
	slices.Sort(out)
	return out
}

// phaseOrder sorts a policy's image list: what needs attention first.
var phaseOrder = map[v1alpha1.ImagePhase]int{
	v1alpha1.PhaseFailed: 0, v1alpha1.PhaseBuilding: 1, v1alpha1.PhasePending: 2, v1alpha1.PhaseReady: 3, v1alpha1.PhaseSkipped: 4,
}

// maxStatusImages bounds a policy's status image list (the CRD's limit).
const maxStatusImages = 256

// imageStatuses returns the counts over every image a policy wants and the
// bounded, sorted list of them.
func (t *tracker) imageStatuses(policy string) (v1alpha1.ImageCounts, []v1alpha1.ImageStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var counts v1alpha1.ImageCounts
	var list []v1alpha1.ImageStatus
	for k, img := range t.images {
		if img.wantedBy[policy] <= 0 {
			continue
		}
		// Seconds: what the API server keeps, so an unchanged status
		// compares equal to the one read back.
		st := v1alpha1.ImageStatus{Image: k.Image, Platform: k.Platform, Phase: img.phase, Message: img.message,
			LastTransitionTime: metav1.NewTime(img.since.Truncate(time.Second))}
		if img.build != nil {
			if b := t.builds[*img.build]; b != nil {
				st.Digest, st.Phase, st.Message = b.key.Manifest.String(), b.phase, b.message
				st.LastTransitionTime = metav1.NewTime(b.since.Truncate(time.Second))
				if b.index != "" {
					st.IndexDigest = b.index.String()
				}
				if b.phase == v1alpha1.PhaseBuilding && b.layers > 0 {
					p := &v1alpha1.BuildProgress{Layers: int32(b.layers)}
					for _, l := range b.progress {
						p.Bytes += l.size
						p.BytesDone += l.done
						if l.finished {
							p.LayersDone++
						}
					}
					st.Progress = p
				}
			}
		}
		counts.Total++
		switch st.Phase {
		case v1alpha1.PhasePending:
			counts.Pending++
		case v1alpha1.PhaseBuilding:
			counts.Building++
		case v1alpha1.PhaseReady:
			counts.Ready++
		case v1alpha1.PhaseFailed:
			counts.Failed++
		case v1alpha1.PhaseSkipped:
			counts.Skipped++
		}
		list = append(list, st)
	}
	slices.SortFunc(list, func(a, b v1alpha1.ImageStatus) int {
		return cmp.Or(cmp.Compare(phaseOrder[a.Phase], phaseOrder[b.Phase]), cmp.Compare(a.Image, b.Image), cmp.Compare(a.Platform, b.Platform))
	})
	if len(list) > maxStatusImages {
		list = list[:maxStatusImages]
	}
	return counts, list
}

// readyBuilds counts builds with an index (a metric).
func (t *tracker) readyBuilds() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, b := range t.builds {
		if b.phase == v1alpha1.PhaseReady {
			n++
		}
	}
	return n
}

// imageCount counts wanted images (a metric).
func (t *tracker) imageCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.images)
}

// imageFailedAt returns what the policies' generations were when k's
// resolution failed for good.
func (t *tracker) imageFailedAt(k ImageKey) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if img := t.images[k]; img != nil {
		return img.failedAt
	}
	return ""
}

// policiesOf returns the policies that want k.
func (t *tracker) policiesOf(k ImageKey) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.images[k]
	if img == nil {
		return nil
	}
	out := make([]string, 0, len(img.wantedBy))
	for p := range img.wantedBy {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// publication is a tag to store in the cache: ref is reference@top.
type publication struct {
	image ImageKey
	ref   string
	top   digest.Digest
	creds credentials
}

// toPublish returns the tags of images that lead to a Ready build and are
// not yet stored in the cache as what they resolved to.
func (t *tracker) toPublish(k Key) []publication {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.builds[k]
	if b == nil || b.phase != v1alpha1.PhaseReady {
		return nil
	}
	var out []publication
	for ik := range b.images {
		img := t.images[ik]
		if img == nil || img.top == "" || img.published == img.top || !hasTag(ik.Image) {
			continue
		}
		ref := ik.Image
		if !strings.Contains(ref, "@") {
			ref += "@" + img.top.String()
		}
		out = append(out, publication{image: ik, ref: ref, top: img.top, creds: b.creds})
	}
	return out
}

// published records that image's tag names top in the cache.
func (t *tracker) published(image ImageKey, top digest.Digest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if img := t.images[image]; img != nil {
		img.published = top
	}
}

// hasTag reports whether a normalized reference carries a tag.
func hasTag(ref string) bool {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	return strings.LastIndexByte(ref, ':') > strings.LastIndexByte(ref, '/')
}

// failedImages returns the images whose resolution or build failed for good.
func (t *tracker) failedImages() []ImageKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []ImageKey
	for k, img := range t.images {
		failed := img.phase == v1alpha1.PhaseFailed && img.build == nil
		if img.build != nil {
			if b := t.builds[*img.build]; b != nil && b.phase == v1alpha1.PhaseFailed {
				failed = true
			}
		}
		if failed {
			out = append(out, k)
		}
	}
	return out
}

// subject is an image manifest in its source repository: what indexes and
// usage records are about.
type subject struct {
	repository string
	manifest   digest.Digest
}

func (s subject) String() string { return s.repository + "@" + s.manifest.String() }

// use is how Pods use one image manifest now.
type use struct {
	images   []string        // normalized references, sorted
	policies []string        // the policies that want it
	keep     map[string]bool // platform + "\x00" + settings annotation of each build wanted
}

// usage returns the manifests Pods use now, and the repositories of
// images not resolved yet (whose manifests may be any: garbage
// collection leaves them alone).
func (t *tracker) usage() (map[subject]*use, map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	used := map[subject]*use{}
	for _, b := range t.builds {
		if len(b.images) == 0 {
			continue
		}
		s := subject{b.key.Repository, b.key.Manifest}
		u := used[s]
		if u == nil {
			u = &use{keep: map[string]bool{}}
			used[s] = u
		}
		u.keep[keepKey(b.key.Platform, b.key.Settings.Annotation())] = true
		for ik := range b.images {
			if !slices.Contains(u.images, ik.Image) {
				u.images = append(u.images, ik.Image)
			}
			if img := t.images[ik]; img != nil {
				for p := range img.wantedBy {
					if !slices.Contains(u.policies, p) {
						u.policies = append(u.policies, p)
					}
				}
			}
		}
	}
	for _, u := range used {
		slices.Sort(u.images)
		slices.Sort(u.policies)
	}
	unresolved := map[string]bool{}
	for k, img := range t.images {
		if img.build == nil {
			unresolved[imageRepository(k.Image)] = true
		}
	}
	return used, unresolved
}

func keepKey(platform, settings string) string { return platform + "\x00" + settings }

// inUse reports whether Pods use s now, or might (an image of its
// repository not resolved yet).
func (t *tracker) inUse(s subject) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.builds {
		if len(b.images) > 0 && b.key.Repository == s.repository && b.key.Manifest == s.manifest {
			return true
		}
	}
	for k, img := range t.images {
		if img.build == nil && imageRepository(k.Image) == s.repository {
			return true
		}
	}
	return false
}

// useOf returns how Pods use build k's manifest now, for its usage record.
func (t *tracker) useOf(k Key) *use {
	used, _ := t.usage()
	return used[subject{k.Repository, k.Manifest}]
}

// indexGone records that index of s was deleted: a build that reported
// it Ready is Pending again, and returned to be queued.
func (t *tracker) indexGone(s subject, index digest.Digest) []Key {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Key
	for _, b := range t.builds {
		if b.key.Repository == s.repository && b.key.Manifest == s.manifest && b.index == index && b.phase == v1alpha1.PhaseReady {
			b.setPhase(t.now(), v1alpha1.PhasePending, "index deleted from the cache; building again")
			b.index = ""
			t.markBuild(b)
			out = append(out, b.key)
		}
	}
	return out
}
