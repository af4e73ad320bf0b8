// Wrapper module for promtool: github.com/prometheus/prometheus has exclude and replace
// lines that only a main module may carry; they are copied here from its go.mod.
module secretguard.dev/e2e/tools/prometheus

go 1.25.8

require github.com/prometheus/prometheus v0.314.0

exclude github.com/linode/linodego v1.0.0

exclude (
	github.com/grpc-ecosystem/grpc-gateway v1.14.7
	google.golang.org/api v0.30.0
)

replace cloud.google.com/go => cloud.google.com/go v0.123.0
