-- Recent statistics samples for charts: one row per sample, pruned by age as samples arrive.
-- The *_statistics tables keep only the latest sample; these keep the last hours.

CREATE TABLE host_statistics_history (
    id bigserial PRIMARY KEY,
    host_id uuid NOT NULL REFERENCES host_static (id) ON DELETE CASCADE,
    time timestamptz NOT NULL,
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
    swap_free_mib bigint
);

CREATE INDEX host_statistics_history_host_time_idx ON host_statistics_history (host_id, time);

CREATE TABLE vm_statistics_history (
    id bigserial PRIMARY KEY,
    vm_id uuid NOT NULL REFERENCES vm_static (id) ON DELETE CASCADE,
    time timestamptz NOT NULL,
    cpu_percent double precision,
    mem_percent double precision,
    balloon_cur_kib bigint,
    balloon_target_kib bigint,
    net_rx_bytes bigint,
    net_tx_bytes bigint,
    disk_read_bytes bigint,
    disk_write_bytes bigint
);

CREATE INDEX vm_statistics_history_vm_time_idx ON vm_statistics_history (vm_id, time);

-- Seed the history with the latest sample of every entity, so charts start with a point.
INSERT INTO host_statistics_history (
    host_id, time, cpu_user, cpu_sys, cpu_idle, mem_free_mib, mem_used_percent, vm_count,
    ksm_enabled, ksm_pages, ksm_cpu_percent, swap_total_mib, swap_free_mib)
SELECT host_id, time, cpu_user, cpu_sys, cpu_idle, mem_free_mib, mem_used_percent, vm_count,
       ksm_enabled, ksm_pages, ksm_cpu_percent, swap_total_mib, swap_free_mib
FROM host_statistics;

INSERT INTO vm_statistics_history (
    vm_id, time, cpu_percent, mem_percent, balloon_cur_kib, balloon_target_kib, net_rx_bytes,
    net_tx_bytes, disk_read_bytes, disk_write_bytes)
SELECT vm_id, time, cpu_percent, mem_percent, balloon_cur_kib, balloon_target_kib, net_rx_bytes,
       net_tx_bytes, disk_read_bytes, disk_write_bytes
FROM vm_statistics;
