-- Host power management: which power driver switches the host (and its options), whether
-- power fencing may be used on it, and whether the engine may fence it by itself. One row per
-- host with power management configured; a host without a row has none (the defaults below).
-- options may hold secrets (a BMC password): the engine never sends them back.

CREATE TABLE host_power_management (
    host_id uuid PRIMARY KEY REFERENCES host_static (id) ON DELETE CASCADE,
    enabled boolean NOT NULL DEFAULT false,
    driver text NOT NULL DEFAULT '',
    options jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    fencing_enabled boolean NOT NULL DEFAULT true,
    updated timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT enabled OR driver <> '')
);
