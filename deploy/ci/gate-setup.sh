#!/usr/bin/env bash
# Once per model, with an admin token: register the validation set every version is judged
# on (stored by digest; the same images again change nothing) and set the model's gate.
#
# Environment (EDGEFLEET_URL and EDGEFLEET_TOKEN, an admin token, for the CLI):
#   MODEL            model name (default shapes)
#   DATASET          the set's registered name (default $MODEL-val)
#   VAL_DIR          the images (YOLO labels beside them or in the sibling labels/ tree)
#   MIN_MAP50 MAX_REGRESSION MAX_CLASS_REGRESSION LATENCY_BUDGET_MS MIN_IMAGES
#                    the policy (defaults 0.3, 0.05, 0.15, 200, 50)
set -euo pipefail

MODEL=${MODEL:-shapes}
DATASET=${DATASET:-$MODEL-val}
EDGEFLEET=${EDGEFLEET:-edgefleet}
: "${VAL_DIR:?set VAL_DIR to the validation images}"

"$EDGEFLEET" dataset add "$DATASET" "$VAL_DIR"
"$EDGEFLEET" model policy "$MODEL" --dataset "$DATASET" \
    --min-map50 "${MIN_MAP50:-0.3}" \
    --max-regression "${MAX_REGRESSION:-0.05}" \
    --max-class-regression "${MAX_CLASS_REGRESSION:-0.15}" \
    --latency-budget-ms "${LATENCY_BUDGET_MS:-200}" \
    --min-images "${MIN_IMAGES:-50}"
