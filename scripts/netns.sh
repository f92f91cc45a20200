#!/usr/bin/env bash
# A private network namespace for the vanished-client test (needs root, ip, nft).
#   scripts/netns.sh up NAME      namespace NAME with veth: host side 10.213.77.2/30,
#                                 NAME side 10.213.77.1/30 (the server runs there)
#   scripts/netns.sh drop NAME PORT   inside NAME, drop every packet from the
#                                 client's port PORT: the client vanishes, no FIN, no RST
#   scripts/netns.sh down NAME    remove it all
# Nothing outside the namespace's own firewall and its veth pair is touched.
# NETNS_NET picks the /30 (default 10.213.77): tests that may run at the same
# time use different ones.
set -euo pipefail
cmd=$1 ns=$2
net=${NETNS_NET:-10.213.77}
host_if="${ns:0:10}h" ns_if="${ns:0:10}n"
case "$cmd" in
up)
    ip netns add "$ns"
    ip link add "$host_if" type veth peer name "$ns_if"
    ip link set "$ns_if" netns "$ns"
    ip addr add ${net}.2/30 dev "$host_if"
    ip link set "$host_if" up
    ip netns exec "$ns" ip addr add ${net}.1/30 dev "$ns_if"
    ip netns exec "$ns" ip link set "$ns_if" up
    ip netns exec "$ns" ip link set lo up
    ;;
drop)
    ip netns exec "$ns" nft add table inet vanish
    ip netns exec "$ns" nft add chain inet vanish in '{ type filter hook input priority 0; }'
    ip netns exec "$ns" nft add rule inet vanish in tcp sport "$3" drop
    ;;
down)
    ip link del "$host_if" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ;;
*) echo "usage: $0 up|drop|down NAME [PORT]" >&2; exit 2 ;;
esac
