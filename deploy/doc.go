// Package deploy holds what operators deploy beside lpmos: the systemd
// unit and package scripts (built into the deb/rpm by goreleaser's nfpm),
// Prometheus alert rules and a Grafana dashboard. Its tests check the
// rules and the dashboard with promtool.
package deploy
