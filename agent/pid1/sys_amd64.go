package pid1

// sysFinitModule is finit_module(2) on amd64; package syscall lacks it.
const sysFinitModule = 313
