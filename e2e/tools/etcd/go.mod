// Wrapper module: etcd's server module carries replace lines (to its sibling modules),
// which only a main module may have, so `go install` of it fails. Requiring it from here
// lets Go resolve the siblings from the module proxy at the same version.
module secretguard.dev/e2e/tools/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 v3.6.14
