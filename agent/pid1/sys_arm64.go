package pid1

// sysFinitModule is finit_module(2) on arm64 (the generic syscall table).
const sysFinitModule = 273
