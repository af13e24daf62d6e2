// Command lpmos provisions bare-metal servers: one binary with an embedded
// etcd member, the control plane, the regional PXE services and the agent.
package main

import (
	"os"

	"github.com/lpmos/lpmos/app"
)

// version is set by the release build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(app.Main(version, os.Args[1:]))
}
