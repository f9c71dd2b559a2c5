// Package validation checks an ImageBuild the way the API server does when it
// is created, without a cluster: `kiln build -f` and `kiln plan -f` must refuse
// what `kubectl apply -f` of the same file would refuse, with the same message.
//
// There is one source of truth: the generated CRD (config/crd/bases, embedded
// by package config/crd), evaluated by the API server's own code from
// k8s.io/apiextensions-apiserver: the OpenAPI schema validator, the
// x-kubernetes-list-type checks and the x-kubernetes-validations CEL rules.
// The steps and their order follow the create path of the apiextensions
// apiserver (customresource strategy PrepareForCreate and Validate).
package validation

import (
	"context"
	"fmt"
	"sync"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/config/crd"
)

// Validator validates ImageBuild objects against one CRD version.
type Validator struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// groupKind names the objects in errors, as the API server does.
var groupKind = schema.GroupKind{Group: kilnv1.GroupVersion.Group, Kind: "ImageBuild"}

// Default returns the validator of the embedded CRD, built once: compiling
// the schema and the CEL programs takes a few milliseconds.
var Default = sync.OnceValues(func() (*Validator, error) {
	return New(crd.ImageBuilds, kilnv1.GroupVersion.Version)
})

// New builds a validator from a CRD manifest (YAML or JSON) for one version.
func New(manifest []byte, version string) (*Validator, error) {
	props, err := versionSchema(manifest, version)
	if err != nil {
		return nil, err
	}
	s, err := structuralschema.NewStructural(props)
	if err != nil {
		return nil, fmt.Errorf("CRD version %s: converting the schema to a structural schema: %w", version, err)
	}
	if err := structuraldefaulting.PruneDefaults(s); err != nil {
		return nil, fmt.Errorf("CRD version %s: pruning schema defaults: %w", version, err)
	}
	sv, _, err := apiservervalidation.NewSchemaValidator(props)
	if err != nil {
		return nil, fmt.Errorf("CRD version %s: building the schema validator: %w", version, err)
	}
	return &Validator{
		structural: s,
		schema:     sv,
		cel:        cel.NewValidator(s, true, celconfig.PerCallLimit),
	}, nil
}

// versionSchema returns the internal (unversioned) OpenAPI schema of one
// version of the CRD, converted the way the API server converts it.
func versionSchema(manifest []byte, version string) (*apiextensionsinternal.JSONSchemaProps, error) {
	var def apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(manifest, &def); err != nil {
		return nil, fmt.Errorf("parsing the CRD: %w", err)
	}
	for _, v := range def.Spec.Versions {
		if v.Name != version {
			continue
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("CRD %s version %s has no schema", def.Name, version)
		}
		var internal apiextensionsinternal.CustomResourceValidation
		if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v.Schema, &internal, nil); err != nil {
			return nil, fmt.Errorf("CRD %s version %s: converting the schema: %w", def.Name, version, err)
		}
		return internal.OpenAPIV3Schema, nil
	}
	return nil, fmt.Errorf("CRD %s has no version %s", def.Name, version)
}

// ValidateCreate returns what the API server would refuse in a create of obj,
// given as the JSON object a client sends. obj is modified as the server
// modifies it before validating (status dropped, unknown fields pruned,
// defaults applied).
func (v *Validator) ValidateCreate(ctx context.Context, obj map[string]any) field.ErrorList {
	// The status subresource is enabled: a create cannot set status.
	delete(obj, "status")
	structuralpruning.Prune(obj, v.structural, true)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(obj, v.structural)
	structuraldefaulting.Default(obj, v.structural)

	errs := validateObjectMeta(obj)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, v.schema)...)
	errs = append(errs, schemaobjectmeta.Validate(ctx, nil, obj, v.structural, false)...)
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, v.structural, obj)...)
	if blocking(errs) {
		// The CEL rules assume a well-typed object: the API server skips them
		// and says so.
		return append(errs, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"))
	}
	celErrs, _ := v.cel.Validate(ctx, nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

// Validate checks a typed ImageBuild as it would be sent to the API server
// and returns nil or an Invalid StatusError whose message is the API server's.
func (v *Validator) Validate(ctx context.Context, ib *kilnv1.ImageBuild) error {
	obj, err := toJSONObject(ib)
	if err != nil {
		return err
	}
	return v.ValidateObject(ctx, obj)
}

// ValidateObject is Validate for the JSON object a client sends.
func (v *Validator) ValidateObject(ctx context.Context, obj map[string]any) error {
	name := nameOf(obj)
	if errs := v.ValidateCreate(ctx, obj); len(errs) > 0 {
		return apierrors.NewInvalid(groupKind, name, errs)
	}
	return nil
}

// toJSONObject encodes ib the way a client does, and decodes it the way the
// API server does (integers stay int64).
func toJSONObject(ib *kilnv1.ImageBuild) (map[string]any, error) {
	data, err := json.Marshal(ib)
	if err != nil {
		return nil, fmt.Errorf("encoding ImageBuild %s/%s: %w", ib.Namespace, ib.Name, err)
	}
	obj := map[string]any{}
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("decoding ImageBuild %s/%s: %w", ib.Namespace, ib.Name, err)
	}
	return obj, nil
}

// validateObjectMeta applies the API server's ObjectMeta rules for a
// namespaced create (name a DNS subdomain, labels, annotations, ...).
func validateObjectMeta(obj map[string]any) field.ErrorList {
	path := field.NewPath("metadata")
	raw, ok := obj["metadata"].(map[string]any)
	if !ok {
		raw = map[string]any{}
	}
	meta := &metav1.ObjectMeta{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, meta); err != nil {
		return field.ErrorList{field.Invalid(path, raw, err.Error())}
	}
	return metavalidation.ValidateObjectMeta(meta, true, metavalidation.NameIsDNSSubdomain, path)
}

func nameOf(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return name
}

// blocking reports errors after which the API server does not evaluate CEL
// rules (the same list as its customresource strategy).
func blocking(errs field.ErrorList) bool {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true
		}
	}
	return false
}
