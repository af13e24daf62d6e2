// Package agent is the root of the stdlib-only lpmos agent. Its packages
// (hw, config, client, install, pid1, runner, wire) import the Go standard
// library and each other only; deps_test.go enforces that, because the
// agent ships inside a small initramfs and wire is linked by the server too.
package agent
