package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-build/kiln/internal/engine"
	"github.com/kiln-build/kiln/internal/layer"
	"github.com/kiln-build/kiln/internal/source"
	"github.com/kiln-build/kiln/internal/units"
)

// BindLimitFlags registers the bounds every build is held to (source size,
// stall and rate, layer size and shape, decoder memory, the build's
// deadline) on cmd. kiln
// manager and kiln build/plan both register them here, so the two take the
// same flags with the same meaning and can never drift. Zero values select
// the engine's defaults.
func BindLimitFlags(cmd *cobra.Command, src *source.Options, lim *layer.Limits, buildTimeout *time.Duration) {
	f := cmd.Flags()
	f.Int64Var(&src.MaxBytes, "max-source-bytes", 0, "Largest fetched (possibly compressed) layer or archive; 0 is the default, 8 GiB.")
	f.DurationVar(&src.ReadTimeout, "source-read-timeout", 0,
		fmt.Sprintf("A source that sends no byte for this long fails (and is retried); 0 is the default, %s.", source.DefaultReadTimeout))
	f.Int64Var(&src.MinRate, "min-transfer-rate", 0,
		fmt.Sprintf("Slowest a source may send, in bytes per second over --min-transfer-window; slower fails the attempt (and is retried). 0 is the default, %d; negative disables.", source.DefaultMinRate))
	f.DurationVar(&src.MinRateWindow, "min-transfer-window", 0,
		fmt.Sprintf("Time spent waiting for a source over which --min-transfer-rate is measured; 0 is the default, %s.", source.DefaultMinRateWindow))
	f.Int64Var(&lim.MaxUncompressedBytes, "max-layer-bytes", 0, "Largest uncompressed layer tar; 0 is the default, 16 GiB.")
	f.IntVar(&lim.MaxEntries, "max-layer-entries", 0, "Most tar entries in one layer; 0 is the default, 1048576.")
	f.Int64Var(&lim.MaxRatio, "max-compression-ratio", 0, "Largest uncompressed:compressed ratio of a layer (tar bombs); 0 is the default, 1000.")
	f.Int64Var(&lim.MaxDecoderMemory, "max-decoder-memory", 0,
		fmt.Sprintf("Largest xz dictionary or zstd window a layer or base archive may declare, in bytes; 0 is the default, %s; negative disables.", units.Bytes(layer.DefaultMaxDecoderMemory)))
	f.DurationVar(buildTimeout, "build-timeout", 0,
		fmt.Sprintf("A build still running after this long fails permanently (LimitExceeded, naming what was running); 0 is the default, %s; negative disables.", engine.DefaultBuildTimeout))
}
