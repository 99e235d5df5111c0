"""Pure parts of the libvirt adapter's migration: flags, typed parameters, job statistics."""

from __future__ import annotations

import libvirt

from vdsmlike.virt.libvirt_migration import job_stats_from, migration_flags, migration_params
from vdsmlike.vm.migration import JobStats, MigrationRequest

BASE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER


def test_a_plain_request_is_live_and_peer_to_peer():
    """Without options: LIVE | PEER2PEER, the destination address, its XML and the bandwidth."""
    request = MigrationRequest(
        "qemu+unix:///session?socket=/s",
        migrate_uri="tcp://127.0.0.1",
        listen_address="127.0.0.1",
        dest_xml="<domain/>",
        bandwidth=52,
    )
    assert migration_flags(request) == BASE
    assert migration_params(request) == {
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1",
        libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>",
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 52,
    }


def test_options_become_flags():
    """Each option sets its libvirt flag; parallel connections come with their count."""
    request = MigrationRequest(
        "u",
        auto_converge=True,
        compressed=True,
        encrypted=True,
        abort_on_error=True,
        parallel_connections=4,
    )
    flags = migration_flags(request)
    for flag in (
        libvirt.VIR_MIGRATE_AUTO_CONVERGE,
        libvirt.VIR_MIGRATE_COMPRESSED,
        libvirt.VIR_MIGRATE_TLS,
        libvirt.VIR_MIGRATE_ABORT_ON_ERROR,
        libvirt.VIR_MIGRATE_PARALLEL,
    ):
        assert flags & flag
    assert not flags & libvirt.VIR_MIGRATE_TUNNELLED
    assert migration_params(request) == {libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 4}


def test_a_tunnelled_migration_has_no_address():
    """Tunnelled, the data goes through the daemons' connection: no URI, no listen address."""
    request = MigrationRequest("u", migrate_uri="tcp://h", listen_address="h", tunneled=True)
    assert migration_flags(request) & libvirt.VIR_MIGRATE_TUNNELLED
    assert migration_params(request) == {}


def test_job_stats():
    """jobStats() of a running job become JobStats; no job is None."""
    assert job_stats_from({"type": libvirt.VIR_DOMAIN_JOB_NONE}) is None
    stats = {
        "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
        "memory_iteration": 2,
        "data_total": 1000,
        "data_processed": 700,
        "data_remaining": 300,
        "time_elapsed": 2500,
        "downtime": 120,
    }
    assert job_stats_from(stats) == JobStats(2, 1000, 700, 300, 2500, 120)
    sparse = job_stats_from({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 10})
    assert sparse == JobStats(1, 10, 0, 10, 0, None)
