-- The schema the previous release (commit 7f80677) made with create_all on SQLite: sqlite3 .schema
CREATE TABLE model (
	name VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE model_version (
	name VARCHAR(64) NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	release INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	length INTEGER NOT NULL, 
	target VARCHAR NOT NULL, 
	format VARCHAR NOT NULL, 
	id INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_version_label UNIQUE (name, version), 
	CONSTRAINT uq_version_release UNIQUE (name, release)
);
CREATE INDEX ix_model_version_name ON model_version (name);
CREATE TABLE plan_artifact (
	name VARCHAR(64) NOT NULL, 
	version VARCHAR(64) NOT NULL, 
	compute_capability VARCHAR(8) NOT NULL, 
	tensorrt VARCHAR(32) NOT NULL, 
	precision VARCHAR(8) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	length INTEGER NOT NULL, 
	source VARCHAR(80) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	target VARCHAR, 
	id INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_plan UNIQUE (name, version, compute_capability, tensorrt, precision, sha256)
);
CREATE INDEX ix_plan_artifact_name ON plan_artifact (name);
CREATE TABLE device (
	device_id VARCHAR(64) NOT NULL, 
	online BOOLEAN NOT NULL, 
	model VARCHAR, 
	version VARCHAR, 
	phase VARCHAR, 
	error VARCHAR, 
	desired_model VARCHAR, 
	desired_version VARCHAR, 
	labels JSON NOT NULL, 
	fingerprint JSON, 
	agent_version VARCHAR, 
	last_seen DATETIME, 
	director_version INTEGER, 
	failed_model VARCHAR, 
	failed_version VARCHAR, 
	PRIMARY KEY (device_id)
);
CREATE TABLE rollout (
	id INTEGER NOT NULL, 
	model VARCHAR NOT NULL, 
	version VARCHAR NOT NULL, 
	selector JSON NOT NULL, 
	state VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	spec JSON NOT NULL, 
	priority INTEGER NOT NULL, 
	stage INTEGER NOT NULL, 
	stage_started_at DATETIME, 
	ready_at DATETIME, 
	reason VARCHAR, 
	rollback_version VARCHAR, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_rollout_model ON rollout (model);
CREATE INDEX ix_rollout_state ON rollout (state);
CREATE TABLE audit (
	id INTEGER NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	target VARCHAR(128) NOT NULL, 
	detail JSON NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE scheduler_lease (
	name VARCHAR(32) NOT NULL, 
	holder VARCHAR(128) NOT NULL, 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE channel (
	name VARCHAR(64) NOT NULL, 
	model VARCHAR(64) NOT NULL, 
	version VARCHAR(64), 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE pin (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	selector JSON NOT NULL, 
	model VARCHAR(64), 
	version VARCHAR(64), 
	channel VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	created_by VARCHAR(128) NOT NULL
);
CREATE TABLE telemetry_window (
	device_id VARCHAR(64) NOT NULL, 
	model VARCHAR, 
	version VARCHAR, 
	window_start DATETIME NOT NULL, 
	window_end DATETIME NOT NULL, 
	frames INTEGER NOT NULL, 
	drops INTEGER NOT NULL, 
	latency_edges_ms JSON NOT NULL, 
	latency_counts JSON NOT NULL, 
	confidence_edges JSON NOT NULL, 
	confidence_counts JSON NOT NULL, 
	per_class_confidence JSON NOT NULL, 
	detections INTEGER NOT NULL, 
	low_confidence INTEGER NOT NULL, 
	empty_frames INTEGER, 
	fallbacks INTEGER, 
	id INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_telemetry_window_device_id ON telemetry_window (device_id);
CREATE TABLE event (
	id INTEGER NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	kind VARCHAR NOT NULL, 
	phase VARCHAR, 
	model VARCHAR, 
	version VARCHAR, 
	reason VARCHAR, 
	at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_event_device_id ON event (device_id);
CREATE TABLE sample (
	id INTEGER NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	uid VARCHAR(64) NOT NULL, 
	model VARCHAR, 
	version VARCHAR, 
	strategy VARCHAR(64) NOT NULL, 
	reason VARCHAR(256) NOT NULL, 
	captured_at DATETIME NOT NULL, 
	received_at DATETIME NOT NULL, 
	width INTEGER NOT NULL, 
	height INTEGER NOT NULL, 
	bytes INTEGER NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	labels JSON NOT NULL, 
	detections JSON NOT NULL, 
	candidates JSON NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_sample_uid UNIQUE (device_id, uid)
);
CREATE INDEX ix_sample_device_id ON sample (device_id);
CREATE TABLE alert (
	id INTEGER NOT NULL, 
	scope VARCHAR(128) NOT NULL, 
	device_id VARCHAR(64), 
	model VARCHAR, 
	version VARCHAR, 
	metric VARCHAR(32) NOT NULL, 
	value FLOAT NOT NULL, 
	threshold FLOAT NOT NULL, 
	state VARCHAR NOT NULL, 
	fired_at DATETIME NOT NULL, 
	resolved_at DATETIME, 
	labels JSON NOT NULL, 
	baseline VARCHAR(16), 
	reason VARCHAR(32), 
	PRIMARY KEY (id)
);
CREATE INDEX ix_alert_scope ON alert (scope);
CREATE INDEX ix_alert_state ON alert (state);
CREATE TABLE drift_baseline (
	id INTEGER NOT NULL, 
	scope VARCHAR(128) NOT NULL, 
	model VARCHAR(128) NOT NULL, 
	version VARCHAR(128) NOT NULL, 
	size INTEGER NOT NULL, 
	windows INTEGER NOT NULL, 
	frames INTEGER NOT NULL, 
	detections INTEGER NOT NULL, 
	empty_frames INTEGER, 
	confidence_edges JSON NOT NULL, 
	confidence_counts JSON NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_baseline UNIQUE (scope, model, version, size)
);
CREATE TABLE api_token (
	id INTEGER NOT NULL, 
	name VARCHAR(64) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (name), 
	UNIQUE (sha256)
);
CREATE TABLE enroll_token (
	sha256 VARCHAR(64) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	expires_at DATETIME NOT NULL, 
	used_at DATETIME, 
	created_by VARCHAR(128) NOT NULL, 
	PRIMARY KEY (sha256)
);
CREATE INDEX ix_enroll_token_device_id ON enroll_token (device_id);
CREATE TABLE device_cert (
	serial VARCHAR(64) NOT NULL, 
	device_id VARCHAR(64) NOT NULL, 
	pem VARCHAR NOT NULL, 
	issued_at DATETIME NOT NULL, 
	PRIMARY KEY (serial)
);
CREATE INDEX ix_device_cert_device_id ON device_cert (device_id);
CREATE TABLE device_revocation (
	device_id VARCHAR(64) NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(128) NOT NULL, 
	PRIMARY KEY (device_id)
);
CREATE TABLE upload_credential (
	device_id VARCHAR(64) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	PRIMARY KEY (device_id), 
	UNIQUE (sha256)
);
CREATE TABLE sampling_rule (
	id INTEGER NOT NULL, 
	selector JSON NOT NULL, 
	settings JSON NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE telemetry_hour (
	device_id VARCHAR(64) NOT NULL, 
	model VARCHAR, 
	version VARCHAR, 
	frames INTEGER NOT NULL, 
	drops INTEGER NOT NULL, 
	window_start DATETIME NOT NULL, 
	window_end DATETIME NOT NULL, 
	latency_edges_ms JSON NOT NULL, 
	latency_counts JSON NOT NULL, 
	confidence_edges JSON NOT NULL, 
	confidence_counts JSON NOT NULL, 
	per_class_confidence JSON NOT NULL, 
	detections INTEGER NOT NULL, 
	low_confidence INTEGER NOT NULL, 
	empty_frames INTEGER, 
	fallbacks INTEGER, 
	id INTEGER NOT NULL, 
	windows INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_telemetry_hour_device_id ON telemetry_hour (device_id);
CREATE TABLE rollout_device (
	rollout_id INTEGER NOT NULL, 
	device_id VARCHAR NOT NULL, 
	director_version INTEGER NOT NULL, 
	stage INTEGER NOT NULL, 
	previous_model VARCHAR, 
	previous_version VARCHAR, 
	assigned_at DATETIME, 
	PRIMARY KEY (rollout_id, device_id), 
	FOREIGN KEY(rollout_id) REFERENCES rollout (id), 
	FOREIGN KEY(device_id) REFERENCES device (device_id)
);
CREATE TABLE rollout_stage (
	rollout_id INTEGER NOT NULL, 
	"index" INTEGER NOT NULL, 
	started_at DATETIME, 
	ended_at DATETIME, 
	outcome VARCHAR NOT NULL, 
	gates JSON NOT NULL, 
	PRIMARY KEY (rollout_id, "index"), 
	FOREIGN KEY(rollout_id) REFERENCES rollout (id)
);
