// Command kubevirt-crds prints, as YAML documents each starting with `---`, what KubeVirt v1.7.0's virt-operator
// installs, from KubeVirt's own generator functions (so the local cloud installs exactly that release's objects):
//
//	kubevirt-crds            every CustomResourceDefinition: the KubeVirt CRD (shipped with the operator's
//	                         manifest, tools/resource-generator -type=kv) and the ones the install strategy lists
//	                         (pkg/virt-operator/resource/generate/install/strategy.go, GenerateCurrentInstallStrategy)
//	kubevirt-crds -rbac controller [-namespace kubevirt]
//	                         virt-controller's ServiceAccount, ClusterRole(Binding) and Role(Binding)
//	                         (pkg/virt-operator/resource/generate/rbac/controller.go, GetAllController)
//
// Each object is marshalled as KubeVirt's manifest generators do (tools/util.MarshallObject: no status, no
// creationTimestamp, no managed-by label), minus that function's textual quote "fixes" (strings.Replace of
// ` '"` and `"'`), which break descriptions that start with a double quote (DataVolume's contentType).
//
// Regenerate the vendored copies (from the repository root):
//
//	cd tests/cloud/go-kubevirt && GOTOOLCHAIN=local GONOSUMDB=github.com/rhobs CGO_ENABLED=0 \
//	  go run ./cmd/kubevirt-crds > ../../../third_party/kubevirt/v1.7.0/crds.yaml
//	cd tests/cloud/go-kubevirt && GOTOOLCHAIN=local GONOSUMDB=github.com/rhobs CGO_ENABLED=0 \
//	  go run ./cmd/kubevirt-crds -rbac controller > ../../../third_party/kubevirt/v1.7.0/rbac-controller.yaml
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	virtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/rbac"
)

// The install strategy's list, in its order (strategy.go), after the KubeVirt CRD itself.
var crdFuncs = []func() (*extv1.CustomResourceDefinition, error){
	components.NewKubeVirtCrd,
	components.NewVirtualMachineInstanceCrd, components.NewPresetCrd, components.NewReplicaSetCrd,
	components.NewVirtualMachineCrd, components.NewVirtualMachineInstanceMigrationCrd,
	components.NewVirtualMachineSnapshotCrd, components.NewVirtualMachineSnapshotContentCrd,
	components.NewVirtualMachineRestoreCrd, components.NewVirtualMachineInstancetypeCrd,
	components.NewVirtualMachineClusterInstancetypeCrd, components.NewVirtualMachinePoolCrd,
	components.NewMigrationPolicyCrd, components.NewVirtualMachinePreferenceCrd,
	components.NewVirtualMachineClusterPreferenceCrd, components.NewVirtualMachineExportCrd,
	components.NewVirtualMachineCloneCrd,
}

func main() {
	which := flag.String("rbac", "", "print a component's RBAC instead of the CRDs: controller")
	namespace := flag.String("namespace", "kubevirt", "the namespace KubeVirt runs in (for -rbac)")
	flag.Parse()

	var objects []runtime.Object
	switch *which {
	case "":
		for _, f := range crdFuncs {
			crd, err := f()
			if err != nil {
				fail(err)
			}
			objects = append(objects, crd)
		}
	case "controller":
		objects = rbac.GetAllController(*namespace)
	default:
		fail(fmt.Errorf("unknown -rbac %q (known: controller)", *which))
	}
	for _, obj := range objects {
		if err := marshal(obj); err != nil {
			fail(err)
		}
	}
}

// marshal prints one object as a `---` YAML document, without what tools/util.MarshallObject drops.
func marshal(obj runtime.Object) error {
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	var u unstructured.Unstructured
	if err := json.Unmarshal(raw, &u.Object); err != nil {
		return err
	}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "labels", virtv1.ManagedByLabel)
	out, err := yaml.Marshal(u.Object)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append([]byte("---\n"), out...))
	return err
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kubevirt-crds:", err)
	os.Exit(1)
}
