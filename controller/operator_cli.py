"""Operator commands against a controller at $EDGEFLEET_URL (default http://127.0.0.1:8600).

Only the standard library is imported here; handlers live in ``operator_cmds``.
"""

from __future__ import annotations

from typing import Any

H = "edgefleet.controller.operator_cmds"
D = "edgefleet.controller.data_cmds"
S = "edgefleet.controller.stage_cmds"
STAGES = ("candidate", "staging", "production", "archived")  # controller/stage_lifecycle.py
G = "edgefleet.controller.gate_cmds"


def register(sub: Any) -> None:
    _register_models(sub)
    _register_fleet(sub)


def _register_models(sub: Any) -> None:
    model = sub.add_parser("model", help="models and versions")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    push = msub.add_parser("push", help="upload and sign a model version (.onnx or .pt)")
    push.add_argument("name")
    push.add_argument("file", nargs="?", help="the .onnx or .pt (or give --from-mlflow)")
    push.add_argument("--version", default=None, help="version label (default: next vN)")
    push.add_argument(
        "--validation",
        metavar="DIR",
        default=None,
        help="images (YOLO labels optional) for the model card and drift baseline",
    )
    push.add_argument(
        "--key",
        metavar="FILE",
        default=None,
        help="the publisher's models key (PEM): sign here, upload signed metadata",
    )
    push.add_argument(
        "--run-dir", metavar="DIR", default=None,
        help="the Ultralytics run that trained it (args.yaml, results.csv)",
    )  # fmt: skip
    push.add_argument(
        "--data", metavar="DATA_YAML", default=None,
        help="the data.yaml it was trained on (default: the run's args.yaml data)",
    )  # fmt: skip
    push.add_argument(
        "--weights", metavar="FILE", default=None,
        help="the .pt this ONNX was exported from elsewhere (its digest is recorded)",
    )  # fmt: skip
    push.add_argument(
        "--from-mlflow", metavar="MODEL_URI", default=None,
        help="a registered version, models:/NAME/VERSION or models:/NAME@ALIAS, from the "
        "registry at $MLFLOW_TRACKING_URI (its run's params, metrics and tags go into the "
        "lineage; needs the mlflow extra)",
    )  # fmt: skip
    push.set_defaults(handler=f"{H}:model_push")
    show = msub.add_parser("show", help="print a version's lineage and model card")
    show.add_argument("target", metavar="NAME:VERSION")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=f"{D}:model_show")
    mdiff = msub.add_parser("diff", help="compare two versions' lineage: metrics, args, dataset")
    mdiff.add_argument("a", metavar="NAME:A")
    mdiff.add_argument("b", metavar="NAME:B")
    mdiff.add_argument("--json", action="store_true")
    mdiff.set_defaults(handler=f"{D}:model_diff")
    mlist = msub.add_parser("list", help="list models and their versions")
    mlist.add_argument("--json", action="store_true")
    mlist.set_defaults(handler=f"{H}:model_list")
    _register_reproduce(msub)
    stage = msub.add_parser("stage", help="move a version to a registry stage (admin)")
    stage.add_argument("target", metavar="NAME:VERSION")
    stage.add_argument("stage", choices=STAGES)
    stage.set_defaults(handler=f"{S}:model_stage")
    _register_plans(msub)
    register_gate(sub, msub)


def _register_reproduce(msub: Any) -> None:
    repro = msub.add_parser(
        "reproduce", help="write a version's recorded training command, arguments and "
        "dataset manifest; with --weights, check that a re-export gives the pushed ONNX",
    )  # fmt: skip
    repro.add_argument("target", metavar="NAME:VERSION")
    repro.add_argument("--out", required=True, metavar="DIR", help="where to write them")
    repro.add_argument(
        "--weights", metavar="FILE",
        help="the .pt it was exported from (checked against the recorded digest)",
    )  # fmt: skip
    repro.add_argument(
        "--export-arg", action="append", default=[], metavar="KEY=VALUE",
        help="export with this instead of the recorded argument; repeat for several",
    )  # fmt: skip
    repro.add_argument("--json", action="store_true")
    repro.set_defaults(handler="edgefleet.controller.reproduce_cmds:model_reproduce")


def _register_fleet(sub: Any) -> None:
    device = sub.add_parser("device", help="devices")
    dsub = device.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    dlist = dsub.add_parser("list", help="fleet table")
    dlist.add_argument("--json", action="store_true")
    dlist.set_defaults(handler=f"{H}:device_list")
    drefresh = dsub.add_parser(
        "refresh", help="make a device poll now and retry artifacts it refused"
    )
    drefresh.add_argument("device_id")
    drefresh.set_defaults(handler=f"{H}:device_refresh")
    dwait = dsub.add_parser(
        "wait", help="wait until a device is online (and runs NAME:VERSION, committed)"
    )
    dwait.add_argument("device_id")
    dwait.add_argument("--runs", metavar="NAME:VERSION", help="also wait for this version")
    dwait.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    dwait.set_defaults(handler=f"{H}:device_wait")
    register_device_trust(dsub)

    rollout = sub.add_parser("rollout", help="roll a model version out to devices")
    rsub = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    create = rsub.add_parser("create", help="roll NAME:VERSION out to matching devices, in stages")
    create.add_argument("target", metavar="NAME:VERSION", nargs="?",
                        help="model version (optional with --file)")  # fmt: skip
    create.add_argument(
        "--selector", action="append", default=[], metavar="KEY=VALUE",
        help="label selector; repeat to AND several",
    )  # fmt: skip
    create.add_argument("--file", help="rollout spec (YAML); flags given here override it")
    create.add_argument("--stages", help='counts or percents, e.g. "1,10%%,50%%,100%%"')
    create.add_argument("--soak", help="soak per stage after its devices committed: 30s, 5m")
    create.add_argument(
        "--install-timeout", metavar="DURATION",
        help="time an assigned device has to commit or refuse before the stage is "
        "Inconclusive (default 30m)",
    )  # fmt: skip
    create.add_argument("--on-failure", choices=["pause", "rollback"])
    create.add_argument(
        "--gate", action="append", default=[], metavar="METRIC:THRESHOLD[:MIN_SAMPLES]",
        help='a gate; repeat for several; "ml" adds the default ML gates',
    )  # fmt: skip
    create.add_argument("--max-concurrent", type=int, help="downloads at once")
    create.add_argument("--stratify-by", metavar="LABEL", help="first stages span this label")
    create.add_argument("--priority", type=int)
    create.add_argument("--override-gate", action="store_true",
                        help="roll out a version the validation gate rejected (admin)")  # fmt: skip
    _windows_and_shadow(create)
    create.set_defaults(handler=f"{H}:rollout_create")
    rlist = rsub.add_parser("list", help="every rollout with its state and stage")
    rlist.add_argument("--json", action="store_true")
    rlist.set_defaults(handler=f"{H}:rollout_list")
    status = rsub.add_parser("status", help="progress of one rollout, per stage and gate")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="live view until it ends")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    status.set_defaults(handler=f"{H}:rollout_status")
    for action, text in (
        ("pause", "stop advancing (devices keep what they run)"),
        ("resume", "continue a paused or failed rollout"),
        ("abort", "end the rollout; devices keep what they run"),
        ("rollback", "send the rollout's devices back to their previous version"),
        ("promote", "skip the rest of this stage's soak: next stage now"),
    ):
        act = rsub.add_parser(action, help=text)
        act.add_argument("id")
        act.set_defaults(handler=f"{H}:rollout_action", action=action)
    _register_window(rsub)
    register_pins(sub)
    register_data_loop(sub)


def _windows_and_shadow(create: Any) -> None:
    """``rollout create``'s maintenance window and shadow flags (the YAML has them too)."""
    create.add_argument(
        "--window", action="append", default=[], metavar="CRON",
        help='maintenance window: devices install only in the minutes this cron names, '
        'e.g. "* 2 * * *" (02:00-02:59); repeat for several',
    )  # fmt: skip
    create.add_argument("--timezone", metavar="TZ", help="the --window crons' zone (default UTC)")
    create.add_argument(
        "--shadow-frames", type=int, metavar="N",
        help="shadow the new model beside the running one on N sampled frames before the swap",
    )  # fmt: skip
    create.add_argument("--shadow-stages", metavar="1,2",
                        help="stages (1-based) that shadow (default: all)")  # fmt: skip
    create.add_argument("--shadow-min-match", type=float, metavar="RATE",
                        help="refuse a model whose boxes match below this share (0-1)")  # fmt: skip


def _register_window(rsub: Any) -> None:
    window = rsub.add_parser(
        "window", help="replace a rollout's maintenance windows (--clear: install now)"
    )
    window.add_argument("id")
    window.add_argument("cron", nargs="*", metavar="CRON", help='e.g. "* 2 * * *"')
    window.add_argument("--timezone", metavar="TZ", help="the crons' zone (default UTC)")
    window.add_argument("--clear", action="store_true",
                        help="no window: devices it held install now")  # fmt: skip
    window.set_defaults(handler=f"{H}:rollout_window")


def register_pins(sub: Any) -> None:
    """``edgefleet pin create|list|delete`` and ``edgefleet channel set|list|delete``."""
    pin = sub.add_parser("pin", help="hold devices on a version or a channel")
    psub = pin.add_subparsers(dest="pin_command", metavar="ACTION", required=True)
    create = psub.add_parser("create", help="pin matching devices to NAME:VERSION or --channel")
    create.add_argument("target", metavar="NAME:VERSION", nargs="?")
    create.add_argument("--channel", help="follow this channel instead of one version")
    create.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE",
                        help="label selector; repeat to AND several")  # fmt: skip
    create.add_argument("--device", help="pin one device (selector device_id=ID)")
    create.set_defaults(handler=f"{H}:pin_create")
    plist = psub.add_parser("list", help="pins and the devices each holds")
    plist.add_argument("--json", action="store_true")
    plist.set_defaults(handler=f"{H}:pin_list")
    pdel = psub.add_parser("delete", help="remove a pin (devices keep what they run)")
    pdel.add_argument("id")
    pdel.set_defaults(handler=f"{H}:pin_delete")

    channel = sub.add_parser("channel", help="named version lines (stable, latest, ...)")
    csub = channel.add_subparsers(dest="channel_command", metavar="ACTION", required=True)
    cset = csub.add_parser("set", help="point a channel at NAME:VERSION (NAME alone: newest)")
    cset.add_argument("name")
    cset.add_argument("target", metavar="NAME[:VERSION]")
    cset.add_argument("--stage", choices=STAGES,
                      help="follow NAME's version in this registry stage")  # fmt: skip
    cset.set_defaults(handler=f"{S}:channel_set")
    clist = csub.add_parser("list", help="channels and what they stand for")
    clist.add_argument("--json", action="store_true")
    clist.set_defaults(handler=f"{H}:channel_list")
    cdel = csub.add_parser("delete", help="remove a channel no pin follows")
    cdel.add_argument("name")
    cdel.set_defaults(handler=f"{H}:channel_delete")


def register_device_trust(dsub: Any) -> None:
    """``edgefleet device token|revoke`` (enrollment, controller/trust_cmds.py)."""
    dtoken = dsub.add_parser("token", help="one-time enrollment token for a device id")
    dtoken.add_argument("device_id")
    dtoken.add_argument("--ttl", type=float, default=24.0, metavar="HOURS")
    dtoken.set_defaults(handler="edgefleet.controller.trust_cmds:device_token")
    drevoke = dsub.add_parser("revoke", help="revoke a device's certificates; refuse it (admin)")
    drevoke.add_argument("device_id")
    drevoke.set_defaults(handler="edgefleet.controller.trust_cmds:device_revoke")


def register_data_loop(sub: Any) -> None:
    alerts = sub.add_parser("alerts", help="drift alerts")
    asub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    alist = asub.add_parser("list", help="firing and resolved alerts")
    alist.add_argument("--state", choices=["firing", "resolved"])
    alist.add_argument("--json", action="store_true")
    alist.set_defaults(handler=f"{D}:alerts_list")

    samples = sub.add_parser("samples", help="frames devices sent back for annotation")
    ssub = samples.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    slist = ssub.add_parser("list", help="received samples, newest first")
    _sample_filters(slist, export=False)
    slist.add_argument("--limit", type=int, default=100)
    slist.add_argument("--json", action="store_true")
    slist.set_defaults(handler=f"{D}:samples_list")
    export = ssub.add_parser(
        "export",
        help="write samples as a dataset for annotation/training",
        description="Samples of rejected canaries (versions whose latest rollout failed, "
        "was rolled back or aborted) are left out unless --include-rejected.",
    )
    export.add_argument("--format", default="yolo", choices=["yolo"])
    export.add_argument("--out", required=True, metavar="DIR")
    _sample_filters(export, export=True)
    export.add_argument("--limit", type=int, default=10000)
    export.add_argument("--val", type=float, default=0.2, help="share of images in val/")
    export.set_defaults(handler=f"{D}:samples_export")

    sampling = sub.add_parser("sampling", help="sampler settings per device group")
    msub = sampling.add_subparsers(dest="sampling_command", metavar="ACTION", required=True)
    mset = msub.add_parser("set", help="settings for devices whose labels match (first wins)")
    mset.add_argument("--selector", default="", metavar="KEY=VALUE[,KEY=VALUE]")
    mset.add_argument("file", metavar="FILE", help="YAML: the agent's sampling: mapping")
    mset.set_defaults(handler="edgefleet.controller.sampling_cmds:sampling_set")
    mlist = msub.add_parser("list", help="the rules, in the order they are tried")
    mlist.add_argument("--json", action="store_true")
    mlist.set_defaults(handler="edgefleet.controller.sampling_cmds:sampling_list")
    mdel = msub.add_parser("delete", help="remove the rule of a selector")
    mdel.add_argument("--selector", default="", metavar="KEY=VALUE[,KEY=VALUE]")
    mdel.set_defaults(handler="edgefleet.controller.sampling_cmds:sampling_delete")


def register_gate(sub: Any, msub: Any) -> None:
    """``edgefleet dataset add|list`` and ``edgefleet model policy`` (controller/gate_cmds.py)."""
    dataset = sub.add_parser("dataset", help="validation sets the gate judges versions on")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    add = dsub.add_parser("add", help="register DIR's images and YOLO labels as NAME (once)")
    add.add_argument("name")
    add.add_argument("dir", metavar="DIR")
    add.add_argument("--json", action="store_true")
    add.set_defaults(handler=f"{G}:dataset_add_cmd")
    dlist = dsub.add_parser("list", help="registered validation sets")
    dlist.add_argument("--json", action="store_true")
    dlist.set_defaults(handler=f"{G}:dataset_list_cmd")
    policy = msub.add_parser(
        "policy", help="show or set a model's validation gate (setting it needs an admin)"
    )
    policy.add_argument("name")
    policy.add_argument("--dataset", help="the registered validation set versions are judged on")
    policy.add_argument("--min-map50", type=float, metavar="X", help="lowest mAP50 (0-1)")
    policy.add_argument("--max-regression", type=float, metavar="X",
                        help="most mAP50 below the production version's (0-1)")  # fmt: skip
    policy.add_argument("--max-class-regression", type=float, metavar="X",
                        help="most AP50 below production's, per class (0-1)")  # fmt: skip
    policy.add_argument("--latency-budget-ms", type=float, metavar="MS",
                        help="median latency on the controller CPU (reference)")  # fmt: skip
    policy.add_argument("--min-images", type=int, metavar="N",
                        help="labelled images the set must have (default 50)")  # fmt: skip
    policy.add_argument("--min-class-instances", type=int, metavar="N",
                        help="objects a class needs for its own check (default 20)")  # fmt: skip
    policy.add_argument("--json", action="store_true")
    policy.set_defaults(handler=f"{G}:model_policy_cmd")


def _register_plans(msub: Any) -> None:
    p = "edgefleet.controller.plan_cmds"
    plan = msub.add_parser("plan", help="prebuilt TensorRT plans of a version")
    psub = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    push = psub.add_parser("push", help="upload and sign a plan built for one GPU and TensorRT")
    push.add_argument("target", metavar="NAME:VERSION")
    push.add_argument("file", help="the serialized engine (.plan / .engine)")
    push.add_argument("--compute-capability", required=True, help='the GPU\'s, e.g. "8.7"')
    push.add_argument("--tensorrt", required=True, help='the TensorRT it was built with: "10.3.0"')
    push.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    push.set_defaults(handler=f"{p}:plan_push")
    plist = psub.add_parser("list", help="plans, signed and shared by devices (pending)")
    plist.add_argument("target", metavar="NAME:VERSION", nargs="?")
    plist.add_argument("--json", action="store_true")
    plist.set_defaults(handler=f"{p}:plan_list")
    approve = psub.add_parser("approve", help="sign a plan a device shared")
    approve.add_argument("id")
    approve.set_defaults(handler=f"{p}:plan_approve")


def _sample_filters(p: Any, *, export: bool) -> None:
    """Scope, version and time filters shared by ``samples list`` and ``samples export``."""
    p.add_argument("--device", help="one device")
    p.add_argument("--site", help="devices labelled site=SITE")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="devices with this label (repeatable: all must match)")  # fmt: skip
    p.add_argument("--version", metavar="[MODEL:]VERSION", help="samples of this model version")
    p.add_argument(
        "--since", metavar="TIME", help="captured at or after: ISO 8601, or 30m, 2h, 1d ago"
    )
    p.add_argument("--until", metavar="TIME", help="captured before: ISO 8601, or 30m, 2h, 1d ago")
    if export:
        p.add_argument("--include-rejected", action="store_true",
                       help="also export samples of rejected canaries")  # fmt: skip
