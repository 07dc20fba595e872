module tenant-routing-wrapper/shim

go 1.19
