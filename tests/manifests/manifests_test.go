package manifests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/hermes-oci/hermes/tests/harness"
)

// kustomizations returns every directory below root/manifests with a
// kustomization.yaml, relative to root/manifests.
func kustomizations(t *testing.T, root string) []string {
	t.Helper()
	var dirs []string
	base := filepath.Join(root, "manifests")
	err := filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			rel, _ := filepath.Rel(base, filepath.Dir(p))
			dirs = append(dirs, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".", "base", "crd", "overlays/ha", "overlays/e2e", "node"} {
		if !slices.Contains(dirs, want) {
			t.Fatalf("manifests/%s has no kustomization.yaml (found %v)", want, dirs)
		}
	}
	return dirs
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// render is `kubectl kustomize dir`, split into objects.
func render(t *testing.T, k *harness.Kube, dir string) []string {
	t.Helper()
	out, err := k.KubectlErr(t, "kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	var docs []string
	for _, d := range strings.Split(out, "\n---\n") {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("kubectl kustomize %s rendered nothing", dir)
	}
	return docs
}

func kind(doc string) string {
	var m struct{ Kind string }
	_ = yaml.Unmarshal([]byte(doc), &m)
	return m.Kind
}

// TestManifests renders every kustomization, applies each with
// --dry-run=server against a real API server, then applies the base for
// real and checks its RBAC as the controller's ServiceAccount.
func TestManifests(t *testing.T) {
	root := repoRoot(t)
	k := harness.StartKube(t)
	dirs := kustomizations(t, root)
	// Namespaced objects are validated against an existing namespace only.
	for _, ns := range []string{"hermes-system", "hermes-node"} {
		k.Kubectl(t, "create", "namespace", ns, "--save-config")
	}
	start := time.Now()
	for _, d := range dirs {
		dir := filepath.Join(root, "manifests", d)
		render(t, k, dir)
		if out, err := k.KubectlErr(t, "apply", "--dry-run=server", "-k", dir); err != nil {
			t.Errorf("kubectl apply --dry-run=server -k manifests/%s: %v\n%s", d, err, out)
		}
	}
	t.Logf("%d kustomizations rendered and validated in %s", len(dirs), time.Since(start).Round(time.Millisecond))

	// A broken manifest fails: the same check on a copy with a bad port.
	broken := t.TempDir()
	harness.Run(t, time.Minute, "cp", "-r", filepath.Join(root, "manifests"), broken)
	dep := filepath.Join(broken, "manifests", "base", "deployment.yaml")
	b, err := os.ReadFile(dep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dep, []byte(strings.Replace(string(b), "containerPort: 8080", "containerPort: 80800", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := k.KubectlErr(t, "apply", "--dry-run=server", "-k", filepath.Join(broken, "manifests", "base")); err == nil || !strings.Contains(err.Error(), "containerPort") {
		t.Errorf("a Deployment with containerPort 80800 passed --dry-run=server: %v\n%s", err, out)
	}

	k.Kubectl(t, "apply", "--server-side", "-k", filepath.Join(root, "manifests", "base"))
	sa := "system:serviceaccount:hermes-system:hermes-controller"
	canI := func(want bool, args ...string) {
		t.Helper()
		out, err := k.KubectlErr(t, append([]string{"auth", "can-i", "--as=" + sa}, args...)...)
		got := strings.TrimSpace(out) == "yes"
		if got != want || (err != nil && want) {
			t.Errorf("kubectl auth can-i %s as the controller: %q (%v); want %v", strings.Join(args, " "), strings.TrimSpace(out), err, want)
		}
	}
	for _, verb := range []string{"get", "list", "watch"} {
		canI(true, verb, "pods", "--all-namespaces")
		canI(true, verb, "namespaces")
		canI(true, verb, "hermespolicies.hermes.dev")
	}
	canI(true, "get", "secrets", "-n", "default")
	canI(true, "get", "serviceaccounts", "-n", "default")
	canI(true, "update", "hermespolicies.hermes.dev", "--subresource=status")
	canI(true, "create", "events.events.k8s.io", "-n", "default")
	canI(true, "create", "events", "-n", "default")
	canI(true, "create", "leases.coordination.k8s.io", "-n", "hermes-system")
	canI(true, "update", "leases.coordination.k8s.io", "-n", "hermes-system")
	// What it must not do.
	canI(false, "list", "secrets", "--all-namespaces")
	canI(false, "watch", "secrets", "-n", "default")
	canI(false, "list", "serviceaccounts", "-n", "default")
	canI(false, "delete", "pods", "-n", "default")
	canI(false, "create", "pods", "-n", "default")
	canI(false, "update", "hermespolicies.hermes.dev")
	canI(false, "delete", "hermespolicies.hermes.dev")
	canI(false, "create", "leases.coordination.k8s.io", "-n", "default")
	canI(false, "get", "configmaps", "-n", "hermes-system")
	canI(false, "update", "namespaces")
}

// TestFlagsExist: every --flag and HERMES_* variable the Deployments and
// the DaemonSet give a binary is one its --help lists.
func TestFlagsExist(t *testing.T) {
	root := repoRoot(t)
	kubectl := harness.Bin(t, "kubectl")
	help := map[string]string{}
	helpOf := func(image string) string {
		bin := map[string]string{"hermes-controller": "hermes-controller", "hermes-snapshotter": "hermes-snapshotter"}[image]
		if bin == "" {
			t.Fatalf("no binary known for image %s", image)
		}
		if help[bin] == "" {
			help[bin] = harness.Run(t, time.Minute, harness.HermesBin(t, bin), "--help")
		}
		return help[bin]
	}
	flag := regexp.MustCompile(`^--[a-z0-9-]+`)
	checked := 0
	for _, d := range kustomizations(t, root) {
		out := harness.Run(t, time.Minute, kubectl, "kustomize", filepath.Join(root, "manifests", d))
		for _, doc := range strings.Split(out, "\n---\n") {
			var spec corev1.PodSpec
			switch kind(doc) {
			case "Deployment":
				var o appsv1.Deployment
				if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
					t.Fatal(err)
				}
				spec = o.Spec.Template.Spec
			case "DaemonSet":
				var o appsv1.DaemonSet
				if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
					t.Fatal(err)
				}
				spec = o.Spec.Template.Spec
			default:
				continue
			}
			for _, c := range spec.Containers {
				image, _, _ := strings.Cut(filepath.Base(c.Image), ":")
				h := helpOf(image)
				for _, a := range append(c.Command, c.Args...) {
					if f := flag.FindString(a); f != "" {
						checked++
						if !strings.Contains(h, "  "+f+" ") && !strings.Contains(h, "  "+f+"\n") {
							t.Errorf("manifests/%s: %s has no flag %s", d, image, f)
						}
					}
				}
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "HERMES_") {
						checked++
						if !strings.Contains(h, "env: "+e.Name+"]") {
							t.Errorf("manifests/%s: %s has no variable %s", d, image, e.Name)
						}
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d flags and variables: are the Deployments there?", checked)
	}
	t.Logf("%d flags and variables checked", checked)
}
