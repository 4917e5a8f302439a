#!/bin/sh
# The one-time ceremony of deploy/compose.yaml (`docker compose --profile ceremony run --rm
# ceremony`), as root in the controller image. Run again, it does only what is missing.
#  - the device CA, the broker's certificate (for the names devices and the controllers use)
#    and the first controller's identity, in the shared controller data volume, with the
#    broker's copy in the broker-pki volume owned by mosquitto (uid 1883 in both images);
#  - replica 2's own broker identity (CN edgefleet-controller-2, in the shipped ACL);
#  - the TUF repositories (`edgefleet keys init`): root (2 of 3), targets and the
#    publishers' models key go to /offline-keys (deploy/offline-keys on the host: move
#    them off it), only the online keys stay in the data volume;
#  - the first admin token, in PostgreSQL (EDGEFLEET_DATABASE_URL), printed once.
set -eu
: "${EDGEFLEET_PUBLIC_HOST:?set EDGEFLEET_PUBLIC_HOST in deploy/.env}"
# The image's paths and users; tests/test_compose_ceremony.py runs it with its own.
data=${EDGEFLEET_DATA:-/var/lib/edgefleet-controller}
broker_dir=${EDGEFLEET_BROKER_DIR:-/etc/edgefleet/pki}
offline=${EDGEFLEET_OFFLINE_KEYS:-/offline-keys}
owner=${EDGEFLEET_OWNER:-edgefleet:edgefleet}
broker_user=${EDGEFLEET_BROKER_USER:-mosquitto}

if [ -f "$data/pki/device-ca.pem" ]; then
    echo "edgefleet-ceremony: $data/pki already holds a device CA; kept"
else
    # "mosquitto" and "emqx": what the controllers dial (compose.yaml, emqx/compose.emqx.yaml)
    edgefleet pki init --data "$data" --broker-name mosquitto --broker-name emqx \
        --broker-name "$EDGEFLEET_PUBLIC_HOST" \
        --broker-user "$broker_user" --broker-dir "$broker_dir"
fi
if [ ! -f "$data/pki/controller-2.pem" ]; then
    edgefleet pki replica --data "$data" 2
fi
if [ ! -f "$data/tuf/image/metadata/timestamp.json" ]; then
    edgefleet keys init --data "$data" --offline-keys "$offline"
fi
if [ ! -f "$data/.admin-token-made" ]; then
    edgefleet token create --role admin --name "${EDGEFLEET_ADMIN_NAME:-ops}" --data "$data"
    touch "$data/.admin-token-made"
fi
chown -R "$owner" "$data"
