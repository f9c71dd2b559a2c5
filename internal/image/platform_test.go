package image

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-build/kiln/internal/failure"
)

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in      string
		want    v1.Platform
		wantErr string
	}{
		{"", v1.Platform{}, ""}, // no requirement; see orDefault
		{"linux/arm64", v1.Platform{OS: "linux", Architecture: "arm64"}, ""},
		{"linux/arm/v7", v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, ""},
		{"windows/amd64:10.0.20348", v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348"}, ""},
		{"linux", v1.Platform{}, "want os/arch[/variant][:os.version]"},
		{"linux/amd64/v1/x", v1.Platform{}, "want os/arch[/variant][:os.version]"},
		{"Linux/amd64", v1.Platform{}, `"Linux" is not a lower-case`},
		{"linux//v7", v1.Platform{}, `"" is not a lower-case`},
		{"windows/amd64:ltsc", v1.Platform{}, `os.version "ltsc" must be digits and dots`},
	}
	for _, tt := range tests {
		got, err := ParsePlatform(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || failure.ReasonOf(err) != failure.InvalidSpec {
				t.Errorf("ParsePlatform(%q) error = %v, want InvalidSpec containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.OS != tt.want.OS || got.Architecture != tt.want.Architecture ||
			got.Variant != tt.want.Variant || got.OSVersion != tt.want.OSVersion {
			t.Errorf("ParsePlatform(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestPlatformMatches(t *testing.T) {
	p := func(s string) v1.Platform { x, _ := ParsePlatform(s); return x }
	tests := []struct {
		want, have string
		match      bool
	}{
		{"linux/amd64", "linux/amd64", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/arm64", true},
		{"linux/arm64/v9", "linux/arm64", false}, // arm64 without a variant is v8
		{"linux/arm/v7", "linux/arm/v6", false},
		{"linux/arm/v7", "linux/arm", true}, // configs often omit the variant
		{"linux/arm", "linux/arm/v6", true},
		{"linux/amd64", "windows/amd64", false},
		{"windows/amd64:10.0.20348", "windows/amd64:10.0.20348.2113", true},
		{"windows/amd64:10.0.2", "windows/amd64:10.0.20348.2113", false},
		{"windows/amd64:10.0.17763", "windows/amd64:10.0.20348.2113", false},
		{"windows/amd64", "windows/amd64:10.0.17763.5122", true},
	}
	for _, tt := range tests {
		if got := platformMatches(p(tt.want), p(tt.have)); got != tt.match {
			t.Errorf("platformMatches(%s, %s) = %v", tt.want, tt.have, got)
		}
	}
}

func TestCheckSinglePlatform(t *testing.T) {
	p := func(s string) v1.Platform { x, _ := ParsePlatform(s); return x }
	tests := []struct {
		want, have string
		err        string // "" when they match
	}{
		{"", "windows/amd64:10.0.20348.2340", ""}, // no platform asked for: taken as it is
		{"", "linux/s390x", ""},
		{"linux/amd64", "linux/amd64", ""},
		{"linux/arm64", "linux/arm64/v8", ""},
		{"linux/arm64/v8", "linux/arm64", ""},
		{"linux/arm/v7", "linux/arm", ""},
		{"windows/amd64:10.0.20348", "windows/amd64:10.0.20348.2340", ""},
		{"windows/amd64", "windows/amd64:10.0.20348.2340", ""},
		{"linux/arm64", "windows/amd64:10.0.20348.2340",
			"base b: base.platform linux/arm64 does not match the base image's platform windows/amd64:10.0.20348.2340"},
		{"windows/amd64", "linux/amd64",
			"base b: base.platform windows/amd64 does not match the base image's platform linux/amd64"},
		{"linux/arm/v7", "linux/arm/v6",
			"base b: base.platform linux/arm/v7 does not match the base image's platform linux/arm/v6"},
		{"windows/amd64:10.0.17763", "windows/amd64:10.0.20348.2340",
			"base b: base.platform windows/amd64:10.0.17763 does not match the base image's platform windows/amd64:10.0.20348.2340"},
		{"linux/amd64", "linux/arm64",
			"base b: base.platform linux/amd64 does not match the base image's platform linux/arm64"},
	}
	for _, tt := range tests {
		err := checkSinglePlatform("b", p(tt.want), p(tt.have))
		if tt.err == "" {
			if err != nil {
				t.Errorf("want %q, have %q: %v", tt.want, tt.have, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tt.err) || failure.ReasonOf(err) != failure.PlatformNotFound || !failure.IsPermanent(err) {
			t.Errorf("want %q, have %q: err = %v\nwant permanent PlatformNotFound starting %q", tt.want, tt.have, err, tt.err)
		}
	}
}

func TestFormatPlatform(t *testing.T) {
	for _, tt := range []struct {
		p    v1.Platform
		want string
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "linux/amd64"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linux/arm/v7"},
		{v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}, "windows/amd64:10.0.20348.1"},
		{v1.Platform{Architecture: "amd64"}, "/amd64"}, // malformed: the gap stays visible
		{v1.Platform{OS: "linux", Variant: "v7"}, "linux/"},
	} {
		if got := formatPlatform(tt.p); got != tt.want {
			t.Errorf("formatPlatform(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
