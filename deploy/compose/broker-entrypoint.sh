#!/bin/sh
# Mosquitto with deploy/mosquitto/mosquitto.conf, plus what deploy/systemd/edgefleet-crl.path
# does on a host: whenever the controller writes a new device CRL (`device revoke`,
# `pki crl`, its own renewal) the broker gets a copy and reloads it (SIGHUP keeps the other
# sessions), so a revoked device is refused at its next TLS handshake.
set -eu
conf=${EDGEFLEET_BROKER_CONF:-/etc/mosquitto/mosquitto.conf}
src=${EDGEFLEET_CRL_SOURCE:-/var/lib/edgefleet-controller/pki/device-ca.crl}  # read-only
dst=${EDGEFLEET_CRL_TARGET:-/etc/edgefleet/pki/device-ca.crl}  # mosquitto.conf's crlfile
poll=${EDGEFLEET_CRL_POLL_S:-5}  # seconds

new_crl() {
    [ -f "$src" ] && ! cmp -s "$src" "$dst" && install -m 0644 "$src" "$dst"
}

new_crl || true
mosquitto -c "$conf" &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null || true' TERM INT
while kill -0 "$broker" 2>/dev/null; do
    sleep "$poll" &
    wait $! || true
    if new_crl; then
        echo "edgefleet-broker: new device CRL from the controller; reloading" >&2
        kill -HUP "$broker" 2>/dev/null || true
    fi
done
wait "$broker"
