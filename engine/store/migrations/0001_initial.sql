-- The engine's first schema: hosts and VMs split as oVirt splits them (static configuration,
-- dynamic runtime state, latest statistics), the audit log, jobs, users and sessions.
-- States are text with CHECK constraints rather than enum types: a later migration widens a
-- CHECK in one statement, inside its transaction.

-- Hosts ----------------------------------------------------------------------------------------

CREATE TABLE host_static (
    id uuid PRIMARY KEY,
    name text NOT NULL CONSTRAINT host_static_name_key UNIQUE CHECK (name <> ''),
    address text NOT NULL CHECK (address <> ''),
    port integer NOT NULL DEFAULT 54321 CHECK (port BETWEEN 1 AND 65535),
    token text NOT NULL DEFAULT '',
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE host_dynamic (
    host_id uuid PRIMARY KEY REFERENCES host_static (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'Installing' CHECK (status IN (
        'Installing', 'Connecting', 'Up', 'NonResponsive',
        'PreparingForMaintenance', 'Maintenance', 'Down')),
    status_reason text NOT NULL DEFAULT '',
    last_seen timestamptz,
    capabilities jsonb NOT NULL DEFAULT '{}',
    cpu_count integer CHECK (cpu_count >= 0),
    mem_total_mib bigint CHECK (mem_total_mib >= 0),
    updated timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE host_statistics (
    host_id uuid PRIMARY KEY REFERENCES host_static (id) ON DELETE CASCADE,
    cpu_user double precision,
    cpu_sys double precision,
    cpu_idle double precision,
    mem_free_mib bigint,
    mem_used_percent double precision,
    vm_count integer,
    ksm_enabled boolean,
    ksm_pages bigint,
    ksm_cpu_percent double precision,
    swap_total_mib bigint,
    swap_free_mib bigint,
    time timestamptz NOT NULL DEFAULT now()
);

-- VMs ------------------------------------------------------------------------------------------

CREATE TABLE vm_static (
    id uuid PRIMARY KEY,
    name text NOT NULL CONSTRAINT vm_static_name_key UNIQUE CHECK (name <> ''),
    mem_mib integer NOT NULL CHECK (mem_mib > 0),
    vcpus integer NOT NULL DEFAULT 1 CHECK (vcpus > 0),
    kernel text,
    initrd text,
    cmdline text,
    disks jsonb NOT NULL DEFAULT '[]',
    nics jsonb NOT NULL DEFAULT '[]',
    custom jsonb NOT NULL DEFAULT '{}',
    ha boolean NOT NULL DEFAULT false,
    ha_priority integer NOT NULL DEFAULT 0 CHECK (ha_priority BETWEEN 0 AND 100),
    pinned_host uuid REFERENCES host_static (id) ON DELETE SET NULL,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vm_dynamic (
    vm_id uuid PRIMARY KEY REFERENCES vm_static (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'Down' CHECK (status IN (
        'Down', 'WaitForLaunch', 'PoweringUp', 'Up', 'PoweringDown', 'RebootInProgress',
        'Paused', 'MigratingFrom', 'MigratingTo', 'RestoringState', 'SavingState',
        'Unknown', 'NotResponding')),
    -- A host cannot be removed while the engine believes VMs run on it or migrate to it.
    run_on_host uuid REFERENCES host_static (id) ON DELETE RESTRICT,
    migrating_to_host uuid REFERENCES host_static (id) ON DELETE RESTRICT,
    exit_status text,
    exit_reason text,
    exit_message text,
    last_notify_time bigint,
    external boolean NOT NULL DEFAULT false,
    updated timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX vm_dynamic_run_on_host_idx ON vm_dynamic (run_on_host) WHERE run_on_host IS NOT NULL;

CREATE TABLE vm_statistics (
    vm_id uuid PRIMARY KEY REFERENCES vm_static (id) ON DELETE CASCADE,
    cpu_percent double precision,
    mem_percent double precision,
    balloon_cur_kib bigint,
    balloon_target_kib bigint,
    net_rx_bytes bigint,
    net_tx_bytes bigint,
    disk_read_bytes bigint,
    disk_write_bytes bigint,
    time timestamptz NOT NULL DEFAULT now()
);

-- The audit log: events outlive the hosts and VMs they mention, so no foreign keys. ----------

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    time timestamptz NOT NULL DEFAULT now(),
    type text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('normal', 'warning', 'error', 'alert')),
    message text NOT NULL,
    host_id uuid,
    vm_id uuid,
    job_id uuid,
    details jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_host_idx ON audit_log (host_id, id) WHERE host_id IS NOT NULL;
CREATE INDEX audit_log_vm_idx ON audit_log (vm_id, id) WHERE vm_id IS NOT NULL;
CREATE INDEX audit_log_severity_idx ON audit_log (severity, id) WHERE severity <> 'normal';

-- Jobs: every action, persisted with its progress and outcome. ----------------------------------

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    action text NOT NULL,
    target_kind text NOT NULL,
    target_id uuid,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'running', 'succeeded', 'failed')),
    progress integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    result jsonb,
    error text,
    idempotency_key text CONSTRAINT jobs_idempotency_key_key UNIQUE,
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_created_idx ON jobs (created DESC);
CREATE INDEX jobs_target_idx ON jobs (target_id) WHERE target_id IS NOT NULL;

-- Accounts ---------------------------------------------------------------------------------------

CREATE TABLE users (
    name text PRIMARY KEY CHECK (name <> ''),
    password_hash text NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    token_hash text PRIMARY KEY,
    user_name text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created timestamptz NOT NULL DEFAULT now(),
    expires timestamptz NOT NULL
);

CREATE INDEX sessions_expires_idx ON sessions (expires);
