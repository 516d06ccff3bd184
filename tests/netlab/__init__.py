"""A private network of Linux network namespaces in which Keep runs as on a real host:
the appliance host (WireGuard, nftables, NGINX, appliance, control) and its clients.
Used by `make demo` and the end-to-end tests. It never touches the root namespace's
firewall, routes or interfaces; every address is from the documentation ranges."""
