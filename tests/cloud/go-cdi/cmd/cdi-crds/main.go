// Prints every CustomResourceDefinition CDI v1.65.0's operator installs (pkg/operator/resources, generated from
// CDI's API types), sorted by name and separated by `---`: what the local cloud installs before cdi-controller.
//
//	go run ./cmd/cdi-crds > ../../../third_party/cdi/v1.65.0/crds.yaml
package main

import (
	"fmt"
	"sort"
	"strings"

	"kubevirt.io/containerized-data-importer/pkg/operator/resources"
)

func main() {
	names := make([]string, 0, len(resources.CDICRDs))
	for name := range resources.CDICRDs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Printf("---\n%s\n", strings.TrimSpace(resources.CDICRDs[name]))
	}
}
