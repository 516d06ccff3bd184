"""Host-level changes: WireGuard, nftables, NGINX rendering, the appliance CA (issue 6)."""
