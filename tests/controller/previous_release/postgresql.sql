-- The schema the previous release (commit 7f80677) made with create_all on PostgreSQL 15:
-- pg_dump -s --no-owner --no-privileges, less comments, blank lines, SETs and psql meta-commands
CREATE TABLE public.alert (
    id integer NOT NULL,
    scope character varying(128) NOT NULL,
    device_id character varying(64),
    model character varying,
    version character varying,
    metric character varying(32) NOT NULL,
    value double precision NOT NULL,
    threshold double precision NOT NULL,
    state character varying NOT NULL,
    fired_at timestamp with time zone NOT NULL,
    resolved_at timestamp with time zone,
    labels json NOT NULL,
    baseline character varying(16),
    reason character varying(32)
);
CREATE SEQUENCE public.alert_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.alert_id_seq OWNED BY public.alert.id;
CREATE TABLE public.api_token (
    id integer NOT NULL,
    name character varying(64) NOT NULL,
    role character varying(16) NOT NULL,
    sha256 character varying(64) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone
);
CREATE SEQUENCE public.api_token_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.api_token_id_seq OWNED BY public.api_token.id;
CREATE TABLE public.audit (
    id integer NOT NULL,
    at timestamp with time zone NOT NULL,
    actor character varying(128) NOT NULL,
    action character varying(32) NOT NULL,
    target character varying(128) NOT NULL,
    detail json NOT NULL
);
CREATE SEQUENCE public.audit_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.audit_id_seq OWNED BY public.audit.id;
CREATE TABLE public.channel (
    name character varying(64) NOT NULL,
    model character varying(64) NOT NULL,
    version character varying(64),
    updated_at timestamp with time zone NOT NULL
);
CREATE TABLE public.device (
    device_id character varying(64) NOT NULL,
    online boolean NOT NULL,
    model character varying,
    version character varying,
    phase character varying,
    error character varying,
    desired_model character varying,
    desired_version character varying,
    labels json NOT NULL,
    fingerprint json,
    agent_version character varying,
    last_seen timestamp with time zone,
    director_version integer,
    failed_model character varying,
    failed_version character varying
);
CREATE TABLE public.device_cert (
    serial character varying(64) NOT NULL,
    device_id character varying(64) NOT NULL,
    pem character varying NOT NULL,
    issued_at timestamp with time zone NOT NULL
);
CREATE TABLE public.device_revocation (
    device_id character varying(64) NOT NULL,
    at timestamp with time zone NOT NULL,
    actor character varying(128) NOT NULL
);
CREATE TABLE public.drift_baseline (
    id integer NOT NULL,
    scope character varying(128) NOT NULL,
    model character varying(128) NOT NULL,
    version character varying(128) NOT NULL,
    size integer NOT NULL,
    windows integer NOT NULL,
    frames integer NOT NULL,
    detections integer NOT NULL,
    empty_frames integer,
    confidence_edges json NOT NULL,
    confidence_counts json NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.drift_baseline_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.drift_baseline_id_seq OWNED BY public.drift_baseline.id;
CREATE TABLE public.enroll_token (
    sha256 character varying(64) NOT NULL,
    device_id character varying(64) NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    created_by character varying(128) NOT NULL
);
CREATE TABLE public.event (
    id integer NOT NULL,
    device_id character varying(64) NOT NULL,
    kind character varying NOT NULL,
    phase character varying,
    model character varying,
    version character varying,
    reason character varying,
    at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.event_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.event_id_seq OWNED BY public.event.id;
CREATE TABLE public.model (
    name character varying(64) NOT NULL,
    created_at timestamp with time zone NOT NULL
);
CREATE TABLE public.model_version (
    name character varying(64) NOT NULL,
    version character varying(64) NOT NULL,
    release integer NOT NULL,
    sha256 character varying(64) NOT NULL,
    length integer NOT NULL,
    target character varying NOT NULL,
    format character varying NOT NULL,
    id integer NOT NULL,
    created_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.model_version_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.model_version_id_seq OWNED BY public.model_version.id;
CREATE TABLE public.pin (
    id integer NOT NULL,
    selector json NOT NULL,
    model character varying(64),
    version character varying(64),
    channel character varying(64),
    created_at timestamp with time zone NOT NULL,
    created_by character varying(128) NOT NULL
);
CREATE SEQUENCE public.pin_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.pin_id_seq OWNED BY public.pin.id;
CREATE TABLE public.plan_artifact (
    name character varying(64) NOT NULL,
    version character varying(64) NOT NULL,
    compute_capability character varying(8) NOT NULL,
    tensorrt character varying(32) NOT NULL,
    "precision" character varying(8) NOT NULL,
    sha256 character varying(64) NOT NULL,
    length integer NOT NULL,
    source character varying(80) NOT NULL,
    state character varying(16) NOT NULL,
    target character varying,
    id integer NOT NULL,
    created_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.plan_artifact_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.plan_artifact_id_seq OWNED BY public.plan_artifact.id;
CREATE TABLE public.rollout (
    id integer NOT NULL,
    model character varying NOT NULL,
    version character varying NOT NULL,
    selector json NOT NULL,
    state character varying NOT NULL,
    created_at timestamp with time zone NOT NULL,
    spec json NOT NULL,
    priority integer NOT NULL,
    stage integer NOT NULL,
    stage_started_at timestamp with time zone,
    ready_at timestamp with time zone,
    reason character varying,
    rollback_version character varying
);
CREATE TABLE public.rollout_device (
    rollout_id integer NOT NULL,
    device_id character varying NOT NULL,
    director_version integer NOT NULL,
    stage integer NOT NULL,
    previous_model character varying,
    previous_version character varying,
    assigned_at timestamp with time zone
);
CREATE SEQUENCE public.rollout_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.rollout_id_seq OWNED BY public.rollout.id;
CREATE TABLE public.rollout_stage (
    rollout_id integer NOT NULL,
    index integer NOT NULL,
    started_at timestamp with time zone,
    ended_at timestamp with time zone,
    outcome character varying NOT NULL,
    gates json NOT NULL
);
CREATE TABLE public.sample (
    id integer NOT NULL,
    device_id character varying(64) NOT NULL,
    uid character varying(64) NOT NULL,
    model character varying,
    version character varying,
    strategy character varying(64) NOT NULL,
    reason character varying(256) NOT NULL,
    captured_at timestamp with time zone NOT NULL,
    received_at timestamp with time zone NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    bytes integer NOT NULL,
    sha256 character varying(64) NOT NULL,
    labels json NOT NULL,
    detections json NOT NULL,
    candidates json NOT NULL
);
CREATE SEQUENCE public.sample_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.sample_id_seq OWNED BY public.sample.id;
CREATE TABLE public.sampling_rule (
    id integer NOT NULL,
    selector json NOT NULL,
    settings json NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
CREATE SEQUENCE public.sampling_rule_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.sampling_rule_id_seq OWNED BY public.sampling_rule.id;
CREATE TABLE public.scheduler_lease (
    name character varying(32) NOT NULL,
    holder character varying(128) NOT NULL,
    expires_at timestamp with time zone NOT NULL
);
CREATE TABLE public.telemetry_hour (
    device_id character varying(64) NOT NULL,
    model character varying,
    version character varying,
    frames integer NOT NULL,
    drops integer NOT NULL,
    window_start timestamp with time zone NOT NULL,
    window_end timestamp with time zone NOT NULL,
    latency_edges_ms json NOT NULL,
    latency_counts json NOT NULL,
    confidence_edges json NOT NULL,
    confidence_counts json NOT NULL,
    per_class_confidence json NOT NULL,
    detections integer NOT NULL,
    low_confidence integer NOT NULL,
    empty_frames integer,
    fallbacks integer,
    id integer NOT NULL,
    windows integer NOT NULL
);
CREATE SEQUENCE public.telemetry_hour_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.telemetry_hour_id_seq OWNED BY public.telemetry_hour.id;
CREATE TABLE public.telemetry_window (
    device_id character varying(64) NOT NULL,
    model character varying,
    version character varying,
    window_start timestamp with time zone NOT NULL,
    window_end timestamp with time zone NOT NULL,
    frames integer NOT NULL,
    drops integer NOT NULL,
    latency_edges_ms json NOT NULL,
    latency_counts json NOT NULL,
    confidence_edges json NOT NULL,
    confidence_counts json NOT NULL,
    per_class_confidence json NOT NULL,
    detections integer NOT NULL,
    low_confidence integer NOT NULL,
    empty_frames integer,
    fallbacks integer,
    id integer NOT NULL
);
CREATE SEQUENCE public.telemetry_window_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE public.telemetry_window_id_seq OWNED BY public.telemetry_window.id;
CREATE TABLE public.upload_credential (
    device_id character varying(64) NOT NULL,
    sha256 character varying(64) NOT NULL,
    created_at timestamp with time zone NOT NULL,
    revoked_at timestamp with time zone
);
ALTER TABLE ONLY public.alert ALTER COLUMN id SET DEFAULT nextval('public.alert_id_seq'::regclass);
ALTER TABLE ONLY public.api_token ALTER COLUMN id SET DEFAULT nextval('public.api_token_id_seq'::regclass);
ALTER TABLE ONLY public.audit ALTER COLUMN id SET DEFAULT nextval('public.audit_id_seq'::regclass);
ALTER TABLE ONLY public.drift_baseline ALTER COLUMN id SET DEFAULT nextval('public.drift_baseline_id_seq'::regclass);
ALTER TABLE ONLY public.event ALTER COLUMN id SET DEFAULT nextval('public.event_id_seq'::regclass);
ALTER TABLE ONLY public.model_version ALTER COLUMN id SET DEFAULT nextval('public.model_version_id_seq'::regclass);
ALTER TABLE ONLY public.pin ALTER COLUMN id SET DEFAULT nextval('public.pin_id_seq'::regclass);
ALTER TABLE ONLY public.plan_artifact ALTER COLUMN id SET DEFAULT nextval('public.plan_artifact_id_seq'::regclass);
ALTER TABLE ONLY public.rollout ALTER COLUMN id SET DEFAULT nextval('public.rollout_id_seq'::regclass);
ALTER TABLE ONLY public.sample ALTER COLUMN id SET DEFAULT nextval('public.sample_id_seq'::regclass);
ALTER TABLE ONLY public.sampling_rule ALTER COLUMN id SET DEFAULT nextval('public.sampling_rule_id_seq'::regclass);
ALTER TABLE ONLY public.telemetry_hour ALTER COLUMN id SET DEFAULT nextval('public.telemetry_hour_id_seq'::regclass);
ALTER TABLE ONLY public.telemetry_window ALTER COLUMN id SET DEFAULT nextval('public.telemetry_window_id_seq'::regclass);
ALTER TABLE ONLY public.alert
    ADD CONSTRAINT alert_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.api_token
    ADD CONSTRAINT api_token_name_key UNIQUE (name);
ALTER TABLE ONLY public.api_token
    ADD CONSTRAINT api_token_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.api_token
    ADD CONSTRAINT api_token_sha256_key UNIQUE (sha256);
ALTER TABLE ONLY public.audit
    ADD CONSTRAINT audit_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.channel
    ADD CONSTRAINT channel_pkey PRIMARY KEY (name);
ALTER TABLE ONLY public.device_cert
    ADD CONSTRAINT device_cert_pkey PRIMARY KEY (serial);
ALTER TABLE ONLY public.device
    ADD CONSTRAINT device_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.device_revocation
    ADD CONSTRAINT device_revocation_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.drift_baseline
    ADD CONSTRAINT drift_baseline_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.enroll_token
    ADD CONSTRAINT enroll_token_pkey PRIMARY KEY (sha256);
ALTER TABLE ONLY public.event
    ADD CONSTRAINT event_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.model
    ADD CONSTRAINT model_pkey PRIMARY KEY (name);
ALTER TABLE ONLY public.model_version
    ADD CONSTRAINT model_version_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.pin
    ADD CONSTRAINT pin_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.plan_artifact
    ADD CONSTRAINT plan_artifact_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.rollout_device
    ADD CONSTRAINT rollout_device_pkey PRIMARY KEY (rollout_id, device_id);
ALTER TABLE ONLY public.rollout
    ADD CONSTRAINT rollout_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.rollout_stage
    ADD CONSTRAINT rollout_stage_pkey PRIMARY KEY (rollout_id, index);
ALTER TABLE ONLY public.sample
    ADD CONSTRAINT sample_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.sampling_rule
    ADD CONSTRAINT sampling_rule_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.scheduler_lease
    ADD CONSTRAINT scheduler_lease_pkey PRIMARY KEY (name);
ALTER TABLE ONLY public.telemetry_hour
    ADD CONSTRAINT telemetry_hour_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.telemetry_window
    ADD CONSTRAINT telemetry_window_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.upload_credential
    ADD CONSTRAINT upload_credential_pkey PRIMARY KEY (device_id);
ALTER TABLE ONLY public.upload_credential
    ADD CONSTRAINT upload_credential_sha256_key UNIQUE (sha256);
ALTER TABLE ONLY public.drift_baseline
    ADD CONSTRAINT uq_baseline UNIQUE (scope, model, version, size);
ALTER TABLE ONLY public.plan_artifact
    ADD CONSTRAINT uq_plan UNIQUE (name, version, compute_capability, tensorrt, "precision", sha256);
ALTER TABLE ONLY public.sample
    ADD CONSTRAINT uq_sample_uid UNIQUE (device_id, uid);
ALTER TABLE ONLY public.model_version
    ADD CONSTRAINT uq_version_label UNIQUE (name, version);
ALTER TABLE ONLY public.model_version
    ADD CONSTRAINT uq_version_release UNIQUE (name, release);
CREATE INDEX ix_alert_scope ON public.alert USING btree (scope);
CREATE INDEX ix_alert_state ON public.alert USING btree (state);
CREATE INDEX ix_device_cert_device_id ON public.device_cert USING btree (device_id);
CREATE INDEX ix_enroll_token_device_id ON public.enroll_token USING btree (device_id);
CREATE INDEX ix_event_device_id ON public.event USING btree (device_id);
CREATE INDEX ix_model_version_name ON public.model_version USING btree (name);
CREATE INDEX ix_plan_artifact_name ON public.plan_artifact USING btree (name);
CREATE INDEX ix_rollout_model ON public.rollout USING btree (model);
CREATE INDEX ix_rollout_state ON public.rollout USING btree (state);
CREATE INDEX ix_sample_device_id ON public.sample USING btree (device_id);
CREATE INDEX ix_telemetry_hour_device_id ON public.telemetry_hour USING btree (device_id);
CREATE INDEX ix_telemetry_window_device_id ON public.telemetry_window USING btree (device_id);
ALTER TABLE ONLY public.rollout_device
    ADD CONSTRAINT rollout_device_device_id_fkey FOREIGN KEY (device_id) REFERENCES public.device(device_id);
ALTER TABLE ONLY public.rollout_device
    ADD CONSTRAINT rollout_device_rollout_id_fkey FOREIGN KEY (rollout_id) REFERENCES public.rollout(id);
ALTER TABLE ONLY public.rollout_stage
    ADD CONSTRAINT rollout_stage_rollout_id_fkey FOREIGN KEY (rollout_id) REFERENCES public.rollout(id);
