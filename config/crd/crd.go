// Package crd embeds the generated CustomResourceDefinitions so that Go code
// can validate objects against exactly the schema the API server enforces.
// The embedded file is the one `make manifests` writes (there is no copy to
// regenerate), and `make verify` fails when it is stale.
package crd

import _ "embed"

// ImageBuilds is config/crd/bases/kiln.dev_imagebuilds.yaml, the
// imagebuilds.kiln.dev CRD as generated from api/v1alpha1.
//
//go:embed bases/kiln.dev_imagebuilds.yaml
var ImageBuilds []byte
