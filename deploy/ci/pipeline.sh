#!/usr/bin/env bash
# Train a detector with Ultralytics, push it through the controller's validation gate, and
# start a canary rollout. The gate (a policy per model, `gate-setup.sh`) judges the pushed
# version on a registered validation set; a version it rejects is stored as rejected, this
# script stops with exit 3 and no rollout is created.
#
# Environment (EDGEFLEET_URL and EDGEFLEET_TOKEN, an operator token, for the CLI):
#   MODEL         model name in the registry (default shapes)
#   VERSION       version label (default: the controller's next vN)
#   MODEL_FILE    a .pt or .onnx to push; when set, the train step is skipped
#   DATA_YAML     the Ultralytics data.yaml to train on (train step)
#   MODEL_CFG     what to train (default yolo26n.yaml: from scratch, nothing downloaded)
#   EPOCHS IMGSZ  training length and image size (defaults 30, 160)
#   RUN_ROOT      where Ultralytics writes the run (default runs/ci)
#   SELECTOR      label selector of the canary's devices, KEY=VALUE (default: all)
#   STAGES        canary stages (default "1,10%,50%,100%")
#
# Exit: 0 pushed and rolling out, 3 the validation gate rejected the version, 1 an error.
set -euo pipefail

MODEL=${MODEL:-shapes}
STAGES=${STAGES:-1,10%,50%,100%}
EDGEFLEET=${EDGEFLEET:-edgefleet}

step() { printf '== %s\n' "$*"; }

train() {
    : "${DATA_YAML:?set DATA_YAML (the data.yaml to train on) or MODEL_FILE}"
    local root=${RUN_ROOT:-runs/ci}
    step "train ${MODEL_CFG:-yolo26n.yaml} on ${DATA_YAML}"
    YOLO_OFFLINE=1 yolo detect train data="$DATA_YAML" model="${MODEL_CFG:-yolo26n.yaml}" \
        epochs="${EPOCHS:-30}" imgsz="${IMGSZ:-160}" project="$root" name=run exist_ok=True \
        pretrained=False plots=False amp=False device=cpu
    MODEL_FILE="$root/run/weights/best.pt"
    RUN_DIR="$root/run"
}

push() {
    local args=("$MODEL" "$MODEL_FILE")
    if [[ -n ${VERSION:-} ]]; then args+=(--version "$VERSION"); fi
    if [[ -n ${RUN_DIR:-} ]]; then args+=(--run-dir "$RUN_DIR"); fi
    step "push $MODEL_FILE as $MODEL${VERSION:+:$VERSION} through the validation gate"
    local out code=0
    out=$("$EDGEFLEET" model push "${args[@]}") || code=$?
    printf '%s\n' "$out"
    if ((code == 3)); then
        step "the validation gate rejected it: no rollout"
        exit 3
    fi
    ((code == 0)) || exit "$code"
    PUSHED=$(sed -n 's/^pushed \([^ ]*\) .*/\1/p' <<<"$out")
}

canary() {
    local args=("$PUSHED" --stages "$STAGES" --gate ml --on-failure rollback)
    if [[ -n ${SELECTOR:-} ]]; then args+=(--selector "$SELECTOR"); fi
    step "canary rollout of $PUSHED ($STAGES)"
    "$EDGEFLEET" rollout create "${args[@]}"
}

if [[ -z ${MODEL_FILE:-} ]]; then
    train
fi
push
canary
