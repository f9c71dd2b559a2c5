package sandbox

import "testing"

func BenchmarkGenerateInputs(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateInputs(); err != nil {
			b.Fatal(err)
		}
	}
}
