-- Affinity groups (oVirt's affinity_groups and affinity_group_members): a VM<->VM rule over the
-- member VMs (positive: together on one host; negative: apart; none) and a VM->host rule over
-- the member hosts (positive: only on them; negative: never on them; no hosts: no rule), each
-- hard (enforcing) or soft (a preference). hosts_hard NULL means "as hard". Removing a VM or a
-- host removes its memberships; the group stays.

CREATE TABLE affinity_groups (
    id uuid PRIMARY KEY,
    name text NOT NULL CONSTRAINT affinity_groups_name_key UNIQUE CHECK (name <> ''),
    description text NOT NULL DEFAULT '',
    vm_polarity text NOT NULL DEFAULT 'none'
        CHECK (vm_polarity IN ('positive', 'negative', 'none')),
    hard boolean NOT NULL DEFAULT false,
    host_polarity text NOT NULL DEFAULT 'positive'
        CHECK (host_polarity IN ('positive', 'negative')),
    hosts_hard boolean,
    priority double precision NOT NULL DEFAULT 1 CHECK (priority >= 0),
    created timestamptz NOT NULL DEFAULT now(),
    updated timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE affinity_group_vms (
    group_id uuid NOT NULL REFERENCES affinity_groups (id) ON DELETE CASCADE,
    vm_id uuid NOT NULL REFERENCES vm_static (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, vm_id)
);
CREATE INDEX affinity_group_vms_vm_id ON affinity_group_vms (vm_id);

CREATE TABLE affinity_group_hosts (
    group_id uuid NOT NULL REFERENCES affinity_groups (id) ON DELETE CASCADE,
    host_id uuid NOT NULL REFERENCES host_static (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, host_id)
);
CREATE INDEX affinity_group_hosts_host_id ON affinity_group_hosts (host_id);
