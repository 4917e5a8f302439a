#!/bin/sh
# The one-time ceremony of deploy/compose.yaml (`docker compose --profile ceremony run --rm
# ceremony`), as root in the controller image. Run again, it does only what is missing.
#  - the device CA, the broker's certificate (for the names devices and the controllers use)
#    and the first controller's identity, in the shared controller data volume, with the
#    broker's copy in the broker-pki volume owned by mosquitto (uid 1883 in both images);
#  - replica 2's own broker identity (CN edgefleet-controller-2, in the shipped ACL);
#  - the first admin token, in PostgreSQL (EDGEFLEET_DATABASE_URL), printed once.
set -eu
data=/var/lib/edgefleet-controller
: "${EDGEFLEET_PUBLIC_HOST:?set EDGEFLEET_PUBLIC_HOST in deploy/.env}"

if [ -f "$data/pki/device-ca.pem" ]; then
    echo "edgefleet-ceremony: $data/pki already holds a device CA; kept"
else
    # "mosquitto" and "emqx": what the controllers dial (compose.yaml, emqx/compose.emqx.yaml)
    edgefleet pki init --data "$data" --broker-name mosquitto --broker-name emqx \
        --broker-name "$EDGEFLEET_PUBLIC_HOST" \
        --broker-user mosquitto --broker-dir /etc/edgefleet/pki
fi
if [ ! -f "$data/pki/controller-2.pem" ]; then
    edgefleet pki replica --data "$data" 2
fi
chown -R edgefleet:edgefleet "$data"
if [ ! -f "$data/.admin-token-made" ]; then
    edgefleet token create --role admin --name "${EDGEFLEET_ADMIN_NAME:-ops}" --data "$data"
    touch "$data/.admin-token-made"
fi
