package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestDemoFailsWithTheMakeTargetWhenBinariesAreMissing(t *testing.T) {
	t.Setenv("KUBEBUILDER_ASSETS", t.TempDir())
	called := false
	cmd := newDemoCmd(func(context.Context, *rest.Config, string) error { called = true; return nil })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"--once"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "run `make envtest-assets`") || !strings.Contains(err.Error(), "make demo") {
		t.Fatalf("got %v", err)
	}
	if called {
		t.Error("the manager ran although the control plane could not start")
	}
}
